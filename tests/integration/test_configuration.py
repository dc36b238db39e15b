"""A function started without its settings, as a user would run it alone: it answers 503 naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
# Settings a function may find in the test run's own environment: none of them may leak in.
UNSET = ("DATABASE_URL", "MONGODB_URI", "KAFKA_BOOTSTRAP_SERVERS", "IDENTITY_SECRET", "SMTP_URL")


@pytest.fixture(scope="module")
def inventory_alone() -> Iterator[str]:
    """inventory-check served by the functions-framework CLI with no DATABASE_URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env["PYTHONPATH"] = str(ROOT)
    cli = Path(sys.executable).with_name("functions-framework")
    process = subprocess.Popen(
        [str(cli), "--source", "functions/inventory/main.py", "--target", "inventory_check", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("the function did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_missing_setting_is_a_503_problem_naming_it(inventory_alone: str) -> None:
    answer = requests.get(f"{inventory_alone}/api/inventory", params={"skuCode": "pixel_8", "quantity": 1}, timeout=10)
    assert answer.status_code == 503, answer.text
    assert answer.headers["Content-Type"] == "application/problem+json"
    problem = answer.json()
    assert problem["type"] == "/problems/not-configured"
    assert "DATABASE_URL" in problem["detail"]


def test_bad_input_is_still_a_400_before_any_setting_is_needed(inventory_alone: str) -> None:
    answer = requests.get(f"{inventory_alone}/api/inventory", params={"skuCode": "pixel_8", "quantity": 0}, timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.json()["errors"][0]["field"] == "quantity"
