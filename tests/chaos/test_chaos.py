"""The chaos suite: for each server, customers order through the gateway while it is SIGKILLed; the mail
server refuses for a minute. Nothing is lost, nothing is done twice, no answer is a 500, and the shop
comes back with no human action. The figures are `./taskw chaos`'s; here only the promises are checked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.stack import Stack, StackSettings
from tests.chaos.driver import FAULTS, run_fault, table

pytestmark = pytest.mark.slow  # a shop of its own, each server killed under load: minutes


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A shop of its own, durable as `./taskw start` runs it (fsync on), so a kill is a real crash."""
    stack = Stack(StackSettings(data_dir=tmp_path_factory.mktemp("chaos"), port=0, durable=True, environ={}))
    stack.start()
    try:
        yield stack
    finally:
        from functions.shared import db

        db.close_all()
        stack.stop()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_shop_survives(chaos_stack: Stack, fault: str) -> None:
    report = run_fault(chaos_stack, fault)
    print("\n" + table([report]))
    assert report.problems() == []
    assert report.placed > 0
    if FAULTS[fault].heal is None:  # a kill: the server was reaped and restarted, and says so
        server = {"postgres": "postgres", "mongodb": "mongo", "kafka": "kafka", "smtp": "smtp"}[fault]
        status = next(s.status() for s in chaos_stack.servers if s.name == server)
        assert status["restarts"] >= 1 and status["lastExit"]["signal"] == "SIGKILL", status
