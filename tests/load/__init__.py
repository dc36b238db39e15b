"""The load generator: Locust shoppers and an admin (./taskw load)."""
