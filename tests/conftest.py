"""Fixtures shared by the suites: one local stack per session (real servers), identities, HTTP helpers."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from functions.shared import identity  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parent
EVENTS_DIR = TESTS_DIR / "events"


# Fastest first, so that a trivial failure shows in seconds: the suites in this order, each in
# path order. tests/chaos starts a shop of its own and is the slowest.
SUITES = ("unit", "contract", "integration", "e2e", "chaos")


def suite_of(item: pytest.Item) -> int:
    """The rank of the item's suite in SUITES (after them all: a test outside them)."""
    folder = item.path.parent
    while folder.parent != TESTS_DIR and folder != folder.parent:
        folder = folder.parent
    return SUITES.index(folder.name) if folder.parent == TESTS_DIR and folder.name in SUITES else len(SUITES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=suite_of)  # stable: within a suite, the collected order


_running: list[Any] = []  # the session's shop while it runs


def stop_the_stack() -> None:
    """Stops the session's shop, if it runs."""
    while _running:
        shop = _running.pop()
        # In-process functions' pools would keep reconnecting to the stopped server.
        from functions.shared import db

        db.close_all()
        shop.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The whole shop, as `./taskw start` runs it, on free ports in a temporary folder."""
    from local.stack import Stack, StackSettings

    shop = Stack(StackSettings(data_dir=tmp_path_factory.mktemp("stack"), port=0, durable=False, environ={}))
    shop.start()
    _running.append(shop)
    try:
        yield shop
    finally:
        stop_the_stack()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Once the session is over, pytest closes the streams it captured; a daemon thread of a function
    created in this process (the catalog view following a MongoDB server that stopped with the session)
    may still log to them. That is not a test result: logging drops it instead of printing
    "--- Logging error ---" and a traceback at exit."""
    logging.raiseExceptions = False


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # The chaos suite starts a shop of its own: two on the same cores would slow both, so the
    # session's shop (no later test uses it) stops first.
    chaos = SUITES.index("chaos")
    if nextitem is not None and suite_of(nextitem) == chaos and suite_of(item) != chaos:
        stop_the_stack()


@dataclass(frozen=True)
class People:
    """Signed identity headers, as the gateway forwards them."""

    secret: str

    def headers(
        self, subject: str, *roles: str, email: str | None = None, first: str = "Test", last: str = "User"
    ) -> dict[str, str]:
        who = identity.Identity(
            subject, email if email is not None else f"{subject}@example.com", first, last, frozenset(roles)
        )
        return {identity.HEADER: identity.sign(who, self.secret, ttl_seconds=600)}

    def customer(self, subject: str = "customer-1", **kwargs: Any) -> dict[str, str]:
        return self.headers(subject, "customer", **kwargs)

    def admin(self, subject: str = "admin-1") -> dict[str, str]:
        return self.headers(subject, "admin", "customer")


@pytest.fixture(scope="session")
def people(stack: Any) -> People:
    return People(stack.identity_secret)


class Ingress:
    """Requests to Knative Services through the local ingress, addressed by Host header."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def call(self, service: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Host": f"{service}.shop.svc.cluster.local", **kwargs.pop("headers", {})}
        return self.session.request(method, self.url + path, headers=headers, timeout=60, **kwargs)


@pytest.fixture(scope="session")
def ingress(stack: Any) -> Ingress:
    return Ingress(stack.url)


def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Polls until `check` returns something truthy; fails with its last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


@pytest.fixture
def function_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Sets a function's environment for an in-process functions_framework app, then forgets it."""
    from functions.shared.config import config

    def clear() -> None:
        config.cache_clear()
        for name, module in list(sys.modules.items()):
            if name.startswith("functions.") and name.endswith(".bootstrap"):
                for attr in vars(module).values():
                    if callable(getattr(attr, "cache_clear", None)):
                        attr.cache_clear()

    def apply(**env: str) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        clear()

    yield apply
    clear()


def problem_of(response: Any) -> dict[str, Any]:
    """The RFC 9457 body of an error response, after checking it is one."""
    content_type = response.headers.get("Content-Type", "")
    assert content_type.startswith("application/problem+json"), (
        response.status_code,
        content_type,
        response.data if hasattr(response, "data") else response.text,
    )
    body = response.get_json() if hasattr(response, "get_json") else response.json()
    assert body["status"] == response.status_code
    assert body["title"] and body["detail"] and body["type"].startswith("/problems/")
    return dict(body)


@pytest.fixture(scope="session", autouse=True)
def _quiet_environment() -> None:
    # Functions under test read only what the tests give them.
    for name in ("DATABASE_URL", "MONGODB_URI", "KAFKA_BOOTSTRAP_SERVERS", "SMTP_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        os.environ.pop(name, None)


@contextlib.contextmanager
def scratch_database(stack: Any, prefix: str, *schemas: Path) -> Iterator[str]:
    """A database of the test's own on the stack's PostgreSQL, with `schemas` applied; dropped afterwards.

    For tests whose rows must not mix with the shop's own (a relay sweeping them, a listing
    counting them)."""
    import psycopg
    from psycopg import sql

    from functions import migrate
    from functions.shared import db

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    server = stack.database_urls["orders"]
    with psycopg.connect(migrate.database_url(server, "postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = migrate.database_url(server, name)
    db.apply_schema(url, *schemas)
    try:
        yield url
    finally:
        db.pool(url).close()  # only this database's: the stack's own pools stay in use
        with psycopg.connect(migrate.database_url(server, "postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
