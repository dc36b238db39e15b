"""Contract tests: manifests against the Knative CRD schemas, and against the code they deploy."""
