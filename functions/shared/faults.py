"""Fault injection for resilience tests: SHOP_FAULTS lists points where the process misbehaves.

    after-reserve    order-place dies (SIGKILL) between its reservation and its commit
    delay:<seconds>  every request waits that long before it is handled (a slow upstream)

Off unless the variable is set (never in the manifests). The end-to-end tests use it to
die between two steps of a saga, where no compensation code can run, and prove that
nothing leaks anyway.
"""

from __future__ import annotations

import os
import signal
import time

from functions.shared.config import config


def _faults() -> list[str]:
    return [f for f in config().optional("SHOP_FAULTS", "").split(",") if f]


def point(name: str) -> None:
    """SIGKILL this process here if SHOP_FAULTS names this point."""
    if name in _faults():
        os.kill(os.getpid(), signal.SIGKILL)


def delay() -> None:
    """Sleeps as long as a `delay:<seconds>` fault says (before each request)."""
    for fault in _faults():
        if fault.startswith("delay:"):
            time.sleep(float(fault.removeprefix("delay:")))
