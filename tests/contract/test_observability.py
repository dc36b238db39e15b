"""knative/observability/: the files parse and render, the collector is wired, Prometheus's configuration
passes promtool, and every metric a dashboard queries is one the code exports."""

from __future__ import annotations

import copy
import logging
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import observability_tools as tools

from . import crd, tooling

BUNDLE = tools.OBSERVABILITY_DIR
YAML_FILES = sorted([*BUNDLE.rglob("*.yaml"), *BUNDLE.rglob("*.yml")])
COLLECTOR_CONFIG = BUNDLE / "otel-collector.yml"
PROMETHEUS_CONFIG = BUNDLE / "prometheus.yml"
DATASOURCES = BUNDLE / "grafana-datasources.yml"
DASHBOARDS = tools.dashboard_files()
# kubernetes_sd_configs keys (Prometheus's configuration reference), for the check promtool
# cannot make here (see test_prometheus_config_passes_promtool).
KUBERNETES_SD_KEYS = {
    "api_server",
    "role",
    "kubeconfig_file",
    "namespaces",
    "selectors",
    "attach_metadata",
    "basic_auth",
    "authorization",
    "oauth2",
    "proxy_url",
    "no_proxy",
    "proxy_from_environment",
    "proxy_connect_header",
    "follow_redirects",
    "enable_http2",
    "tls_config",
}
KUBERNETES_SD_ROLES = {"node", "pod", "service", "endpoints", "endpointslice", "ingress"}
# What "Shop overview" must show (the metrics it is about), not a list of what the code exports.
OVERVIEW_METRICS = {
    "shop_orders_placed_total",
    "shop_order_value_bucket",
    "shop_http_request_duration_seconds_bucket",
    "shop_http_requests_total",
    "shop_inventory_units_reserved_total",
    "shop_inventory_low_stock_events_total",
    "shop_events_published_total",
    "shop_events_consumed_total",
    "shop_notifications_emails_sent_total",
    "shop_outbox_oldest_unsent_age_seconds",
    "shop_events_dead_lettered_total",
    "shop_gateway_circuit_state",
    "shop_gateway_rate_limited_total",
    "shop_function_cold_starts_total",
}


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(BUNDLE)) for path in paths]


def _yaml(path: Path) -> dict[str, Any]:
    documents = crd.load_documents(path)
    assert len(documents) == 1, f"{path.name}: expected one document"
    return documents[0]


# --- files and rendering ------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=_ids(YAML_FILES))
def test_every_yaml_file_parses(path: Path) -> None:
    documents = crd.load_documents(path)  # duplicate keys are errors, as in strict decoding
    assert documents, f"{path.name} holds no document"
    if path.suffix == ".yaml":  # Kubernetes objects; the .yml files are configuration for ConfigMaps
        for document in documents:
            assert isinstance(document.get("apiVersion"), str) and isinstance(document.get("kind"), str)


def test_kustomize_renders_the_bundle() -> None:
    rendered = subprocess.run(
        [tooling.kubectl(), "kustomize", str(BUNDLE)], capture_output=True, text=True, timeout=120
    )
    assert rendered.returncode == 0, rendered.stderr
    objects = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    assert {"otel-collector", "prometheus", "grafana"} <= set(by_kind["Deployment"])
    assert {"otel-collector", "prometheus", "grafana"} <= set(by_kind["Service"])
    config_maps = by_kind["ConfigMap"]
    generated = {re.sub(r"-[a-z0-9]{10}$", "", name): cm for name, cm in config_maps.items()}
    assert set(generated) == {
        "otel-collector-config",
        "prometheus-config",
        "grafana-datasources",
        "grafana-dashboard-providers",
        "grafana-dashboards",
    }
    # The ConfigMaps carry the files byte for byte, under the keys the pods read.
    assert generated["prometheus-config"]["data"]["prometheus.yml"] == PROMETHEUS_CONFIG.read_text()
    assert generated["otel-collector-config"]["data"]["otel-collector.yml"] == COLLECTOR_CONFIG.read_text()
    assert generated["grafana-datasources"]["data"]["datasources.yaml"] == DATASOURCES.read_text()
    assert set(generated["grafana-dashboards"]["data"]) == {path.name for path in DASHBOARDS}
    # Every ConfigMap a pod mounts is in the render (kustomize rewrote the generated names).
    for deployment in by_kind["Deployment"].values():
        for volume in deployment["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, (deployment["metadata"]["name"], volume)
    namespaced = [o for o in objects if o["kind"] not in ("Namespace", "ClusterRole")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"observability", "shop"}
    # Prometheus may list pods in `shop` (its RoleBinding there), nothing else of the shop's.
    in_shop = [(o["kind"], o["metadata"]["name"]) for o in namespaced if o["metadata"]["namespace"] == "shop"]
    assert in_shop == [("RoleBinding", "prometheus-discovery")]


# --- the OpenTelemetry Collector ----------------------------------------------------------


def test_collector_receives_otlp_and_sends_each_signal_to_its_backend() -> None:
    config = _yaml(COLLECTOR_CONFIG)
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for name, pipeline in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline[section]:
                assert component in config[section], f"pipeline {name} uses undefined {section[:-1]} {component}"
        assert pipeline["receivers"] == ["otlp"]
        # memory_limiter first (refuse before buffering), batch last.
        assert pipeline["processors"][0] == "memory_limiter" and pipeline["processors"][-1] == "batch", name
    exporters = config["exporters"]

    def single_exporter(pipeline: str) -> tuple[str, dict[str, Any]]:
        (name,) = pipelines[pipeline]["exporters"]
        return name.split("/")[0], exporters[name]

    assert single_exporter("traces") == ("otlp", {"endpoint": "tempo:4317", "tls": {"insecure": True}})
    kind, metrics_exporter = single_exporter("metrics")
    assert kind == "prometheus" and metrics_exporter["endpoint"].endswith(":8889")
    kind, logs_exporter = single_exporter("logs")
    assert kind == "otlphttp" and logs_exporter["endpoint"].endswith("/otlp")


def test_collector_ports_match_its_config_and_the_scrape_jobs() -> None:
    config = _yaml(COLLECTOR_CONFIG)
    deployment = next(d for d in crd.load_documents(BUNDLE / "otel-collector.yaml") if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == f"0.0.0.0:{ports['otlp-grpc']}"
    assert protocols["http"]["endpoint"] == f"0.0.0.0:{ports['otlp-http']}"
    assert config["exporters"]["prometheus"]["endpoint"] == f"0.0.0.0:{ports['prom-export']}"
    (reader,) = config["service"]["telemetry"]["metrics"]["readers"]
    assert reader["pull"]["exporter"]["prometheus"]["port"] == ports["metrics"]
    # prometheus.yml's collector jobs keep exactly these container ports, by name.
    kept = {
        job["job_name"]: rule["regex"]
        for job in _yaml(PROMETHEUS_CONFIG)["scrape_configs"]
        for rule in job.get("relabel_configs", [])
        if rule.get("action") == "keep" and rule["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]
    }
    assert kept["otel-collector"] == "metrics" and kept["otel-collector-export"] == "prom-export"


# --- Prometheus ---------------------------------------------------------------------------


def _kubernetes_sd_problems(job: str, sd: dict[str, Any]) -> list[str]:
    """What Prometheus would refuse in one kubernetes_sd_configs entry (the checks promtool makes)."""
    problems = [f"{job}: unknown key {key}" for key in set(sd) - KUBERNETES_SD_KEYS]
    role = sd.get("role")
    if role not in KUBERNETES_SD_ROLES:
        problems.append(f"{job}: role {role!r} is not one of {sorted(KUBERNETES_SD_ROLES)}")
    namespaces = sd.get("namespaces", {})
    if set(namespaces) - {"names", "own_namespace"} or not all(isinstance(n, str) for n in namespaces.get("names", [])):
        problems.append(f"{job}: namespaces takes names (a list) and own_namespace")
    for selector in sd.get("selectors", []):
        if set(selector) - {"role", "label", "field"} or selector.get("role") != role:
            problems.append(f"{job}: a {role} role takes selectors of role {role} with label and field only")
    return problems


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    try:
        promtool = tools.prometheus_bin_dir() / "promtool"
    except tools.ToolUnavailable as missing:
        tooling.unavailable(str(missing))
    config = _yaml(PROMETHEUS_CONFIG)
    checked = copy.deepcopy(config)
    # Debian builds Prometheus without Kubernetes service discovery (its NEWS.Debian: "Kubernetes
    # support has been completely removed"), so its promtool refuses the key itself. It then
    # checks everything else (relabelling, jobs, globals) with each kubernetes_sd_configs block
    # swapped for an empty static_configs, and the blocks are checked here against the reference.
    problems: list[str] = []
    probe = tmp_path / "probe.yml"
    probe.write_text("scrape_configs:\n  - job_name: probe\n    kubernetes_sd_configs: [{role: pod}]\n")
    if subprocess.run([str(promtool), "check", "config", str(probe)], capture_output=True).returncode != 0:
        for job in checked["scrape_configs"]:
            for sd in job.pop("kubernetes_sd_configs", []):
                problems += _kubernetes_sd_problems(job["job_name"], sd)
                job.setdefault("static_configs", [])
    assert not problems
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(checked, sort_keys=False))
    result = subprocess.run([str(promtool), "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kubernetes_sd_check_bites() -> None:
    assert not _kubernetes_sd_problems("ok", {"role": "pod", "namespaces": {"names": ["shop"]}})
    assert _kubernetes_sd_problems("bad", {"role": "pods"})
    assert _kubernetes_sd_problems("bad", {"role": "pod", "namespace": {"names": ["shop"]}})
    assert _kubernetes_sd_problems("bad", {"role": "pod", "selectors": [{"role": "service", "label": "a"}]})


def test_prometheus_scrapes_every_knative_service_pod_in_shop() -> None:
    jobs = {job["job_name"]: job for job in _yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    functions = jobs["shop-functions"]
    (sd,) = functions["kubernetes_sd_configs"]
    assert sd["role"] == "pod" and sd["namespaces"]["names"] == ["shop"]
    assert functions.get("metrics_path", "/metrics") == "/metrics"
    rules = functions["relabel_configs"]
    service_label = "__meta_kubernetes_pod_label_serving_knative_dev_service"
    assert {"source_labels": [service_label], "regex": ".+", "action": "keep"} in rules
    assert {
        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
        "regex": "user-port",
        "action": "keep",
    } in rules
    assert {"source_labels": [service_label], "target_label": "service"} in rules
    assert {"otel-collector", "otel-collector-export"} <= set(jobs)


# --- Grafana ------------------------------------------------------------------------------


def test_datasources_link_traces_logs_and_metrics() -> None:
    sources = {source["uid"]: source for source in _yaml(DATASOURCES)["datasources"]}
    assert {uid: s["type"] for uid, s in sources.items()} == {
        "prometheus": "prometheus",
        "tempo": "tempo",
        "loki": "loki",
    }
    tempo, loki = sources["tempo"]["jsonData"], sources["loki"]["jsonData"]
    assert tempo["tracesToLogsV2"]["datasourceUid"] == "loki" and tempo["tracesToLogsV2"]["filterByTraceID"]
    assert tempo["tracesToMetrics"]["datasourceUid"] == "prometheus"
    derived = {field["name"]: field for field in loki["derivedFields"]}
    assert {field["datasourceUid"] for field in derived.values()} == {"tempo"}
    # `$$` is Grafana's escape for `$` in provisioning files: the link is the matched trace id.
    assert {field["url"] for field in derived.values()} == {"$${__value.raw}"}
    metric_queries = [q["query"] for q in tempo["tracesToMetrics"]["queries"]]
    assert tools.metric_names(metric_queries) <= tools.exported_series_names()


def test_the_trace_id_field_matches_the_functions_log_lines() -> None:
    from opentelemetry import trace

    from functions.shared.logs import JsonFormatter

    trace_id, span_id = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
    context = trace.SpanContext(trace_id, span_id, is_remote=False, trace_flags=trace.TraceFlags(1))
    record = logging.LogRecord("shop.orders", logging.INFO, __file__, 1, "order placed", None, None)
    with trace.use_span(trace.NonRecordingSpan(context)):
        line = JsonFormatter("order-place").format(record)
    loki = next(s for s in _yaml(DATASOURCES)["datasources"] if s["uid"] == "loki")
    field = next(f for f in loki["jsonData"]["derivedFields"] if f["matcherType"] == "regex")
    match = re.search(field["matcherRegex"], line)
    assert match is not None and match.group(1) == f"{trace_id:032x}", line


@pytest.mark.parametrize("path", DASHBOARDS, ids=_ids(DASHBOARDS))
def test_dashboard_parses_with_unique_panel_ids_and_known_datasources(path: Path) -> None:
    dashboard = tools.load_dashboard(path)
    assert dashboard["uid"] == path.stem and dashboard["title"]
    datasources = {source["uid"] for source in _yaml(DATASOURCES)["datasources"]}
    panels = [*dashboard["panels"], *(p for row in dashboard["panels"] for p in row.get("panels", []))]
    ids = Counter(panel["id"] for panel in panels)
    assert all(count == 1 for count in ids.values()), ids
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in datasources, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=_ids(DASHBOARDS))
def test_every_metric_a_dashboard_queries_is_exported_by_the_code(path: Path) -> None:
    used = tools.metric_names(tools.dashboard_queries(tools.load_dashboard(path)))
    assert used, f"{path.name} queries no shop metric"
    unknown = used - tools.exported_series_names()
    assert not unknown, f"{path.name} queries series no registry declares: {sorted(unknown)}"


def test_the_overview_shows_every_metric_the_shop_is_watched_by() -> None:
    missing = OVERVIEW_METRICS - tools.dashboard_metric_names()["shop-overview.json"]
    assert not missing, f"Shop overview has no panel for {sorted(missing)}"


def test_the_metric_checks_bite() -> None:
    exported = tools.exported_series_names()
    assert {"shop_orders_placed_total", "shop_order_value_bucket", "shop_eventing_deliveries_total"} <= exported
    # Suffixes follow the family's type: no _bucket on a counter, no bare histogram, no _total on a gauge.
    assert (
        not {
            "shop_http_requests_total_bucket",
            "shop_http_request_duration_seconds",
            "shop_outbox_oldest_unsent_age_seconds_total",
            "shop_orders_placed",
        }
        & exported
    )
    query = 'sum(rate(shop_http_requests_total{route="shop_not_a_metric"}[5m])) / shop_x_count'
    assert tools.metric_names([query]) == {"shop_http_requests_total", "shop_x_count"}
    board = {
        "panels": [{"type": "row", "panels": [{"targets": [{"expr": "shop_nested_total"}]}]}],
        "templating": {"list": [{"type": "query", "query": {"query": "label_values(shop_var_total, route)"}}]},
    }
    assert tools.metric_names(tools.dashboard_queries(board)) == {"shop_nested_total", "shop_var_total"}
