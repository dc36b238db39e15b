"""A server run as a supervised child process: start, wait until ready, reap at once, restart after a crash."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Self

from local.supervision import Exit, Lifecycle, kill_leftovers

PR_SET_PDEATHSIG = 1
log = logging.getLogger("local.servers")

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


# Looked up once here: loading a library in a forked child of a threaded process can deadlock.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def die_with_parent(signum: int) -> None:
    """In a child between fork and exec: have the kernel send `signum` when the parent dies.

    Servers run in their own sessions (Ctrl-C reaches only the runtime, which stops them in
    order), so without this a runtime killed with SIGKILL would leave them running.
    """
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signum)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class _Server(ABC):
    """What every embedded server shares: start/stop and use as a context manager."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_running: set[_Server] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()


class ServerProcess(_Server):
    """A server run as a child process, writing to <log_dir>/<name>.log.

    The child gets its own session, so Ctrl-C on the terminal reaches only the parent
    (which then calls stop()), and stop() can kill its whole process group if needed.
    A thread waits on each child, so a server that dies is reaped at once (a zombie would
    keep its pid, and with it a lock file such as postmaster.pid, looking alive). After
    `supervise()`, a server that dies without being asked to is restarted on the same port
    and data, with the kubelet's backoff (local.supervision).
    """

    name = "server"
    stop_signal = signal.SIGTERM
    run_as: str | None = None  # system user for the child; None keeps ours
    workdir: Path | None = None

    def __init__(self, port: int | None, log_dir: Path | None) -> None:
        # Chosen once so that a restart comes back on the same port.
        self.port = port or free_port()
        self.log_dir = log_dir if log_dir is not None else Path(tempfile.mkdtemp(prefix=f"local-{self.name}-"))
        self.log_path = self.log_dir / f"{self.name}.log"
        self.lifecycle = Lifecycle()
        self.supervised = False
        # Called after every start but the first (a restart, asked for or after a crash).
        self.on_restart: list[Callable[[], None]] = []
        # Called when the process has ended, asked to or not (before any restart).
        self.on_exit: list[Callable[[], None]] = []
        self.started_at: float | None = None  # wall-clock time the running process became ready
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._started_before = False
        self._watcher: threading.Thread | None = None

    def supervise(self) -> Self:
        """From now on, restart the server whenever it dies without stop() being called."""
        self.supervised = True
        return self

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    def status(self) -> dict[str, object]:
        return {"name": self.name, "port": self.port, "pid": self.pid, **self.lifecycle.as_json()}

    def _prepare(self) -> None:
        """Work to do before the server process starts (runs on every start)."""

    @abstractmethod
    def _command(self) -> list[str]: ...

    @abstractmethod
    def _ready(self) -> bool: ...

    def start(self) -> None:
        self._stopping.clear()
        process = self._launch()
        if process is not None:
            self._watcher = threading.Thread(
                target=self._watch, args=(process,), name=f"watch-{self.name}", daemon=True
            )
            self._watcher.start()

    @property
    def watching(self) -> bool:
        """Whether a thread still watches (and may restart) this server's process."""
        return self._watcher is not None and self._watcher.is_alive()

    def _launch(self) -> subprocess.Popen[bytes] | None:
        """Starts the process and waits until it serves; on failure leaves nothing running.

        The process gets die_with_parent(), which the kernel ties to the *thread* that forks it:
        so only long-lived threads launch (the caller of start(), or the watcher thread, which
        then watches the process it launched for as long as it runs).
        """
        began = time.monotonic()
        with self._lock:
            if self._process is not None or self._stopping.is_set():
                return None
            self.log_dir.mkdir(parents=True, exist_ok=True)
            # Failure messages quote only what this start wrote, not earlier runs.
            self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._prepare()
            with self.log_path.open("ab") as log_file:
                process = self._process = subprocess.Popen(
                    self._command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    start_new_session=True,
                    user=self.run_as,
                    group=self.run_as,
                    extra_groups=[] if self.run_as else None,
                    preexec_fn=lambda: die_with_parent(self.stop_signal),
                )
        self.lifecycle.starting()
        _running.add(self)
        try:
            self._wait_until_ready(process, began + START_TIMEOUT)
        except BaseException:
            self._end(process)
            raise
        self.lifecycle.running()
        self.started_at = time.time()
        log.info(
            "%s ready on %s:%d in %.2f s (log: %s)",
            self.name,
            HOST,
            self.port,
            time.monotonic() - began,
            self.log_path,
        )
        if self._started_before:
            self._notify(self.on_restart, "restart")
        self._started_before = True
        return process

    def _notify(self, listeners: list[Callable[[], None]], what: str) -> None:
        for listener in list(listeners):
            try:
                listener()
            except Exception:
                log.exception("%s: a %s listener failed", self.name, what)

    def _wait_until_ready(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        while not self._ready():
            if process.poll() is not None:
                raise self._failure(f"exited with code {process.returncode} while starting")
            if self._process is not process:
                raise RuntimeError(f"{self.name} was stopped while starting")
            if time.monotonic() > deadline:
                raise self._failure(f"did not accept connections within {START_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def _failure(self, what: str) -> RuntimeError:
        with self.log_path.open("rb") as log_file:
            log_file.seek(self._log_offset)
            tail = log_file.read().decode(errors="replace")[-4000:]
        return RuntimeError(f"{self.name} on {HOST}:{self.port} {what}; {self.log_path} says:\n{tail}")

    def _end(self, process: subprocess.Popen[bytes]) -> None:
        """Kills a process that failed to start, and whatever it left behind."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        kill_leftovers(process.pid)
        with self._lock:
            if self._process is process:
                self._process = None

    def _watch(self, process: subprocess.Popen[bytes]) -> None:
        """Waits for the process to end (reaping it at once); restarts it if it died on its own."""
        while True:
            returncode = process.wait()
            with self._lock:
                if self._process is not process:
                    return  # stop() took it: an exit we asked for
                self._process = None
            _running.discard(self)
            self._notify(self.on_exit, "exit")
            # A killed postmaster's backends outlive it for a moment, holding its shared memory.
            leftovers = kill_leftovers(process.pid)
            exit = Exit.of(returncode)
            if leftovers:
                log.warning("%s: killed %d leftover process(es) of the dead server", self.name, len(leftovers))
            if not self.supervised or self._stopping.is_set():
                self.lifecycle.crashed(exit)
                log.error("%s %s (pid %d); not supervised, it stays down", self.name, exit.reason, process.pid)
                return
            restarted = self._restart_after(exit, process.pid)
            if restarted is None:
                return
            process = restarted

    def _restart_after(self, exit: Exit, pid: int) -> subprocess.Popen[bytes] | None:
        """Starts the server again after the kubelet's backoff; None if stop() came first."""
        while True:
            delay = self.lifecycle.crashed(exit)
            when = "now" if delay == 0 else f"in {delay:.0f} s (CrashLoopBackOff)"
            log.warning("%s %s (pid %d); restarting %s", self.name, exit.reason, pid, when)
            if self._stopping.wait(delay):
                return None
            try:
                process = self._launch()
            except Exception as error:  # noqa: BLE001 - a failed start is one more crash, backed off
                if self._stopping.is_set():
                    return None
                exit = Exit.of(None, f"failed to start: {str(error).splitlines()[0]}")
                continue
            if process is not None:
                self.lifecycle.restarted()
            return process

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process, self._process = self._process, None
        _running.discard(self)
        if process is None:
            self.lifecycle.stopped()
            return
        began = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(self.stop_signal)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", self.name, STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        kill_leftovers(process.pid)
        self.lifecycle.stopped()
        self._notify(self.on_exit, "exit")
        log.info("%s stopped in %.2f s", self.name, time.monotonic() - began)
