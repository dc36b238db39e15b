"""The kubelet's bookkeeping for local processes: backoff steps, CrashLoopBackOff, how an exit is told."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from local.supervision import Backoff, Exit, Lifecycle, State, alive, kill_leftovers, process_group_members


def test_the_first_restart_is_immediate_then_the_delay_doubles_up_to_the_cap() -> None:
    backoff = Backoff(first=1.0, cap=30.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_a_crash_loop_is_reported_as_the_kubelet_reports_it() -> None:
    lifecycle = Lifecycle(Backoff(first=5.0, cap=60.0))
    lifecycle.running()
    assert lifecycle.crashed(Exit.of(-signal.SIGKILL)) == 0.0
    assert lifecycle.state is State.RESTARTING
    lifecycle.running()
    lifecycle.restarted()
    assert lifecycle.crashed(Exit.of(1)) == 5.0
    status = lifecycle.as_json()
    assert status["state"] == "CrashLoopBackOff"
    assert status["restarts"] == 1
    assert status["lastExit"]["exitCode"] == 1 and status["lastExit"]["signal"] is None
    assert 4.0 < status["nextRestartInSeconds"] <= 5.0
    assert 4.0 < lifecycle.backing_off() <= 5.0


def test_running_long_enough_forgets_earlier_crashes() -> None:
    lifecycle = Lifecycle(Backoff(first=5.0, reset_after=0.05))
    lifecycle.running()
    lifecycle.crashed(Exit.of(1))
    lifecycle.running()
    assert lifecycle.crashed(Exit.of(1)) == 5.0  # crashed again at once: backed off
    lifecycle.running()
    time.sleep(0.1)
    assert lifecycle.crashed(Exit.of(1)) == 0.0  # ran past reset_after: a first crash again


def test_an_exit_by_signal_names_the_signal() -> None:
    killed = Exit.of(-9)
    assert (killed.code, killed.signal, killed.reason) == (None, "SIGKILL", "killed by SIGKILL")
    assert Exit.of(3).reason == "exited with code 3"


def test_leftovers_of_a_dead_leader_are_killed_and_a_zombie_is_not_alive() -> None:
    # A session leader with a child in its group; the leader exits, the child stays (a postmaster's backend).
    leader = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.Popen(['sleep', '60']); sys.exit(0)"],
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while alive(leader.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(leader.pid)  # exited: a zombie until reaped, which alive() does not count
    assert os.path.exists(f"/proc/{leader.pid}")
    leftovers = process_group_members(leader.pid)
    assert len(leftovers) == 1
    assert kill_leftovers(leader.pid) == leftovers
    assert process_group_members(leader.pid) == []
    leader.wait()
