"""Fault injection for resilience tests: SHOP_FAULTS lists points where the process kills itself.

Off unless the variable is set (never in the manifests). The end-to-end tests use it to
die between two steps of a saga, where no compensation code can run, and prove that
nothing leaks anyway.
"""

from __future__ import annotations

import os
import signal

from functions.shared.config import config


def point(name: str) -> None:
    """SIGKILL this process here if SHOP_FAULTS names this point."""
    if name in config().optional("SHOP_FAULTS", "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)
