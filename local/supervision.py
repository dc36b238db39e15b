"""What a kubelet does for a container, for the local runtime's processes: restarts with backoff, and the record of it.

Every process the runtime starts (the embedded servers and each function's revision) keeps a
`Lifecycle`. When the process dies without being asked to, the runtime reaps it, notes how it
ended and starts it again on the same port and data after `Backoff.delay()`: at once the first
time, then 1 s, 2 s, 4 s ... up to 30 s while it keeps crashing (CrashLoopBackOff), and from the
start again once it has run for a minute. The kubelet's figures are 10 s doubling to 5 min; a
laptop shop wants its database back within seconds, so the steps here are ten times shorter.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any


class State(StrEnum):
    """As `kubectl get pods` words it (plus ScaledToZero for a Knative revision with no process)."""

    STARTING = "Starting"
    RUNNING = "Running"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    RESTARTING = "Restarting"
    STOPPED = "Stopped"
    SCALED_TO_ZERO = "ScaledToZero"


@dataclass(frozen=True)
class Backoff:
    first: float = 1.0  # the delay before the second restart in a row (the first is immediate)
    cap: float = 30.0
    reset_after: float = 60.0  # running this long forgets earlier crashes

    def delay(self, crashes_in_a_row: int) -> float:
        """Seconds to wait before restarting after the n-th crash in a row (n >= 1)."""
        if crashes_in_a_row <= 1:
            return 0.0
        return float(min(self.cap, self.first * 2 ** (crashes_in_a_row - 2)))


@dataclass(frozen=True)
class Exit:
    """How a process ended: its exit code, or the signal that killed it."""

    code: int | None
    signal: str | None
    at: datetime
    reason: str

    @classmethod
    def of(cls, returncode: int | None, reason: str = "") -> Exit:
        now = datetime.now(UTC)
        if returncode is not None and returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = str(-returncode)
            return cls(None, name, now, reason or f"killed by {name}")
        return cls(returncode, None, now, reason or f"exited with code {returncode}")

    def as_json(self) -> dict[str, Any]:
        return {"exitCode": self.code, "signal": self.signal, "at": self.at.isoformat(), "reason": self.reason}


class Lifecycle:
    """One process's record: state, restarts, last exit, when the next restart is due."""

    def __init__(self, backoff: Backoff | None = None, state: State = State.STOPPED) -> None:
        self.backoff = backoff or Backoff()
        self.state = state
        self.restarts = 0
        self.last_exit: Exit | None = None
        self._crashes_in_a_row = 0
        self._running_since: float | None = None
        self._next_start_at: float | None = None
        self._lock = threading.Lock()

    def starting(self) -> None:
        with self._lock:
            self.state = State.STARTING

    def running(self) -> None:
        with self._lock:
            self.state = State.RUNNING
            self._running_since = time.monotonic()
            self._next_start_at = None

    def stopped(self, state: State = State.STOPPED) -> None:
        """Stopped on purpose (shutdown, scale to zero): not a crash."""
        with self._lock:
            self.state = state
            self._running_since = None
            self._next_start_at = None

    def crashed(self, exit: Exit) -> float:
        """Notes an unasked-for exit (or a failed start); returns the seconds to wait before the restart."""
        with self._lock:
            now = time.monotonic()
            if self._running_since is not None and now - self._running_since >= self.backoff.reset_after:
                self._crashes_in_a_row = 0
            self._crashes_in_a_row += 1
            self._running_since = None
            self.last_exit = exit
            delay = self.backoff.delay(self._crashes_in_a_row)
            self._next_start_at = now + delay
            self.state = State.CRASH_LOOP_BACK_OFF if delay > 0 else State.RESTARTING
            return delay

    def restarted(self) -> None:
        with self._lock:
            self.restarts += 1

    def backing_off(self) -> float:
        """Seconds until a restart is allowed (0 when it may start now)."""
        with self._lock:
            if self._next_start_at is None:
                return 0.0
            return max(0.0, self._next_start_at - time.monotonic())

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            due = None if self._next_start_at is None else max(0.0, self._next_start_at - time.monotonic())
            return {
                "state": self.state.value,
                "restarts": self.restarts,
                "lastExit": self.last_exit.as_json() if self.last_exit else None,
                "nextRestartInSeconds": round(due, 1) if due is not None else None,
            }


def process_group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def kill_leftovers(pgid: int, timeout: float = 10.0) -> list[int]:
    """SIGKILLs what is left of a dead server's process group (a killed postmaster's backends) and waits
    until it is gone: restarting beside them would find their shared memory or ports still in use.

    Safe on a reaped leader: a process group id is not reused while any member lives.
    """
    members = process_group_members(pgid) if Path("/proc").is_dir() else []
    if not members:
        return []
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return []
    deadline = time.monotonic() + timeout
    while process_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return members


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill()
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
