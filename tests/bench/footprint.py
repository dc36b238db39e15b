"""What a function costs before it does any work: the import of its target, and the memory of the stack.

import      a fresh interpreter imports functions-framework and creates the app of one target
            (what a cold container does before it can serve), three times per target; the
            figure is each target's fastest run
memory      the PSS of the whole local stack (runtime, servers, functions: pages shared between
            processes counted once) with every function started, then idle: every function
            without min-scale scaled to zero, as after its autoscaling window
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Iterable

import psutil

from local import manifests
from local.stack import Stack

IMPORT_PROBE = """
import sys, time
began = time.perf_counter()
import functions_framework
functions_framework.create_app(sys.argv[1], sys.argv[2], sys.argv[3])
print((time.perf_counter() - began) * 1000)
"""


FRAMEWORK_PROBE = """
import sys, time
began = time.perf_counter()
import functions_framework
print((time.perf_counter() - began) * 1000)
"""


def framework_milliseconds(runs: int = 3) -> float:
    """The fastest of `runs` fresh imports of functions-framework alone (Flask, Werkzeug, Jinja,
    Click, CloudEvents): what every target imports before any line of the shop's own."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    samples = []
    for _ in range(runs):
        output = subprocess.run(
            [sys.executable, "-c", FRAMEWORK_PROBE], check=True, capture_output=True, text=True, env=env
        ).stdout
        samples.append(float(output.strip().splitlines()[-1]))
    return min(samples)


def import_milliseconds(services: Iterable[manifests.KnativeService], runs: int = 3) -> dict[str, float]:
    """Per distinct target (file, target): the fastest of `runs` fresh imports, in ms."""
    targets: dict[tuple[str, str, str], str] = {}
    for service in services:
        source = service.literal_env("FUNCTION_SOURCE") or "main.py"
        target = service.literal_env("FUNCTION_TARGET") or ""
        signature = service.literal_env("FUNCTION_SIGNATURE_TYPE") or "http"
        targets.setdefault((source, target, signature), service.name)
    timings = {}
    for (source, target, signature), name in sorted(targets.items(), key=lambda item: item[1]):
        samples = []
        for _ in range(runs):
            # No OTEL endpoint, no flags file: what every function imports, nothing optional.
            env = {"PATH": "/usr/bin:/bin", "FUNCTION_TARGET": target, "PYTHONDONTWRITEBYTECODE": "1"}
            output = subprocess.run(
                [sys.executable, "-c", IMPORT_PROBE, target, source, signature],
                check=True,
                capture_output=True,
                text=True,
                env=env,
                cwd=manifests.ROOT,
            ).stdout
            samples.append(float(output.strip().splitlines()[-1]))
        timings[name] = min(samples)
    return timings


def stack_pss_mb() -> tuple[float, float]:
    """(PSS, RSS) in MB of this process (the runtime) and every process below it."""
    me = psutil.Process()
    pss = rss = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue
        pss += info.pss
        rss += info.rss
    return pss / 2**20, rss / 2**20


def wait_between_pings() -> None:
    """PingSources fire at the top of each minute: sample memory well away from them."""
    while not 15 <= time.localtime().tm_sec <= 45:
        time.sleep(0.5)


def scale_idle_functions_to_zero(stack: Stack) -> list[str]:
    """What the autoscaler does once each function's window passes without traffic."""
    stopped = []
    for name, revision in stack.revisions.items():
        if revision.service.min_scale == 0 and revision.running:
            stack.stop_service(name)
            stopped.append(name)
    return stopped


def describe(timings: dict[str, float]) -> str:
    slowest = max(timings, key=lambda name: timings[name])
    return (
        f"median {statistics.median(timings.values()):.0f} ms, slowest {timings[slowest]:.0f} ms ({slowest}),"
        f" {len(timings)} targets"
    )
