"""Shared by the observability tests: Debian's Prometheus binaries, the dashboards' metric names, the code's.

`prometheus_bin_dir()` fetches Debian's `prometheus` package (promtool and prometheus) once into
`.local/tools/` (git-ignored) with `apt-get download` and unpacks it with `dpkg -x`; the contract
test checks the cluster's scrape configuration with its promtool, the e2e test runs its server.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OBSERVABILITY_DIR = ROOT / "knative" / "observability"
DASHBOARD_DIR = OBSERVABILITY_DIR / "dashboards"
TOOLS_DIR = ROOT / ".local" / "tools"
PROMETHEUS_PACKAGE = "prometheus"

# Modules that declare the shop's metrics: the functions' and the gateway's go to prometheus_client's
# default registry, the local runtime's to local.metrics.REGISTRY.
METRIC_MODULES = ("functions.shared.metrics", "gateway.pipeline", "local.eventing", "local.serving")
METRIC_NAME = re.compile(r"\bshop_[a-z0-9_]+")
# PromQL string literals: label values and the like, never metric names.
PROMQL_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# The series names a metric family of each type puts in the exposition (and so in Prometheus).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


class ToolUnavailable(RuntimeError):
    """This machine cannot provide the tool (no apt-get or dpkg): tests that need it skip, saying why."""


# --- Debian's prometheus package ------------------------------------------------------------


def prometheus_bin_dir() -> Path:
    """The unpacked package's usr/bin (promtool, prometheus), downloaded and unpacked on first use."""
    home = TOOLS_DIR / PROMETHEUS_PACKAGE
    bin_dir = home / "usr" / "bin"
    if _has_binaries(bin_dir):
        return bin_dir
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise ToolUnavailable(f"{tool} not found: Debian's {PROMETHEUS_PACKAGE} package cannot be fetched here")
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    # One download at a time (two pytest processes may ask at once); the second finds it done.
    with open(TOOLS_DIR / f"{PROMETHEUS_PACKAGE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _has_binaries(bin_dir):
            _download_and_unpack(home)
    return bin_dir


def _has_binaries(bin_dir: Path) -> bool:
    return all((bin_dir / name).is_file() for name in ("promtool", "prometheus"))


def _download_and_unpack(home: Path) -> None:
    with tempfile.TemporaryDirectory(dir=TOOLS_DIR, prefix=f".{PROMETHEUS_PACKAGE}-") as work:
        download = ["apt-get", "download", PROMETHEUS_PACKAGE]
        downloaded = subprocess.run(download, cwd=work, capture_output=True, text=True, timeout=300)
        if downloaded.returncode != 0 and os.geteuid() == 0:
            # A fresh machine (a CI runner) may have empty package lists: read them once and retry.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600, check=False)
            downloaded = subprocess.run(download, cwd=work, capture_output=True, text=True, timeout=300)
        packages = sorted(Path(work).glob(f"{PROMETHEUS_PACKAGE}_*.deb"))
        if downloaded.returncode != 0 or not packages:
            raise RuntimeError(
                f"apt-get download {PROMETHEUS_PACKAGE} failed ({downloaded.returncode}); "
                f"run `apt-get update` first if the package is unknown:\n{downloaded.stderr.strip()}"
            )
        unpacked = Path(work) / "root"
        subprocess.run(["dpkg", "-x", str(packages[-1]), str(unpacked)], check=True, timeout=300)
        (unpacked / "PACKAGE").write_text(packages[-1].name + "\n")
        # Whole or not at all: a half-unpacked folder never looks ready.
        shutil.rmtree(home, ignore_errors=True)
        unpacked.rename(home)


# --- what the code exports ----------------------------------------------------------------


def exported_series_names() -> set[str]:
    """Every series name the shop's code can expose, read from prometheus_client's registries.

    A family's type says which suffixes its series carry (a counter `x` is `x_total` and
    `x_created`, a histogram `x_bucket`, `x_sum`, `x_count`, `x_created`), so `x_total_bucket`
    or a bare histogram name are not in the set: queries must name series as Prometheus has them.
    """
    for module in METRIC_MODULES:
        importlib.import_module(module)
    from prometheus_client import REGISTRY

    from local.metrics import REGISTRY as RUNTIME_REGISTRY

    names: set[str] = set()
    for registry in (REGISTRY, RUNTIME_REGISTRY):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ("",)))
    return {name for name in names if name.startswith("shop_")}


# --- what the dashboards query ------------------------------------------------------------


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(dashboard, dict), f"{path.name}: not a dashboard object"
    return dashboard


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """PromQL of every panel target (rows' nested panels included) and of every query variable."""
    queries = [value for key, value in _walk(dashboard.get("panels", [])) if key == "expr" and isinstance(value, str)]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and isinstance(query, str):
            queries.append(query)
    return queries


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def metric_names(queries: Iterable[str]) -> set[str]:
    """The shop's series names the queries use (`shop_...` outside string literals)."""
    return {name for query in queries for name in METRIC_NAME.findall(PROMQL_STRING.sub('""', query))}


def dashboard_metric_names() -> dict[str, set[str]]:
    """Series names each dashboard file queries, by file name."""
    return {path.name: metric_names(dashboard_queries(load_dashboard(path))) for path in dashboard_files()}
