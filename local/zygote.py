"""A pre-forking "zygote": cold starts of the local runtime are a fork, and memory pages are shared.

One process imports, once, the libraries every function imports (functions-framework with Flask,
granian, psycopg, pymongo, python-jose, jsonschema, OpenTelemetry, prometheus-client, ...) and
then only forks. Each function process is a fork of it that sets its own environment, log file
and session, then runs `functions.shared.serve` as `python -m functions.shared.serve` would: the
same function, the same server, but it starts without importing the common stack again, and the
pages of that stack stay shared between every function (copy-on-write; `gc.freeze()` keeps the
collector from touching them).

This is a local-runtime matter. In a cluster each revision is its own container and its own
interpreter; what helps there is what a target imports (lazy imports) and the server it runs.
`LOCAL_ZYGOTE=0` starts every function as a fresh interpreter instead, as before.

Protocol, JSON lines: the runtime writes {"id", "env", "cwd", "log"} to the zygote's stdin; the
zygote answers {"id", "pid"} (or {"id", "error"}) and, when a forked process ends (the zygote is
its parent and reaps it), {"exited": pid, "code": returncode as subprocess reports it}.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import logging
import os
import selectors
import signal
import sys
import threading
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# prctl is looked up here, before any fork: not in a forked child.
from local.servers.process import die_with_parent

log = logging.getLogger("local.zygote")

# What the functions' targets import, and are slow to import (python -X importtime): the zygote
# imports them once, and then the shop's own modules (`_ours`).
PRELOAD = (
    "functions_framework",
    "flask",
    "werkzeug",
    "cloudevents.http",
    "granian",
    "granian.server",
    "granian.wsgi",
    "gunicorn.app.base",
    "psycopg",
    "psycopg_pool",
    "pymongo",
    "jose.jwt",
    "jose.jwk",
    "jsonschema",
    "jinja2",
    "requests",
    "urllib3",
    "circuitbreaker",
    "prometheus_client",
    "confluent_kafka",
    "confluent_kafka.admin",
    "opentelemetry.trace",
    "opentelemetry.propagate",
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk.resources",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.instrumentation.flask",
    "yaml",
    # Fault flags (functions/shared/flags.py), set up on a function's first request: 70 to 90 ms of
    # imports that request would otherwise pay in every forked function.
    "openfeature.api",
    "openfeature.contrib.provider.flagd",
    "openfeature.contrib.provider.flagd.config",
    "openfeature.exception",
    "email.message",
    "email.policy",
    "smtplib",
)


# --- the zygote process ------------------------------------------------------------------------


def _ours() -> list[str]:
    """The shop's own modules the targets import: every module of functions/ and gateway/ but the
    targets' files themselves (main.py, which wire the app as they are executed) and the migration.
    None of them reads a setting or starts a thread as it is imported (`main` checks the threads)."""
    from local.manifests import ROOT

    names = []
    for package in ("functions", "gateway"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name in ("main.py", "__main__.py", "migrate.py"):
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _preload() -> list[str]:
    missing = []
    for name in (*PRELOAD, *_ours()):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def _write(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _become(request: Mapping[str, Any], closing: list[int]) -> None:
    """In the forked child: becomes the function process `request` describes. Never returns."""
    code = 1
    try:
        os.setsid()  # its own session and process group, like start_new_session=True
        die_with_parent(signal.SIGTERM)
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        for fd in closing:
            with contextlib.suppress(OSError):
                os.close(fd)
        output = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        nothing = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nothing, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        os.close(nothing)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [str(Path(request["cwd"]) / "functions" / "shared" / "serve.py")]
        from functions.shared import serve

        serve.main()
        code = 0
    except SystemExit as exit:
        if isinstance(exit.code, int):
            code = exit.code
        elif exit.code is not None:
            print(exit.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the process's last word goes to its log, as an uncaught error would
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def main() -> None:
    missing = _preload()
    if missing:
        print(f"zygote: not preloaded (cannot be imported): {', '.join(missing)}", file=sys.stderr)
    if threading.active_count() != 1:  # a fork copies only the calling thread: nothing may run beside it
        sys.exit(f"zygote: {threading.active_count()} threads after the imports; cannot fork safely")
    gc.collect()
    gc.freeze()  # the children's collections leave the shared objects' pages alone
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "requests")
    selector.register(wake_read, selectors.EVENT_READ, "signals")
    pending = b""
    _write({"ready": os.getpid()})
    while True:
        for key, _ in selector.select():
            if key.data == "signals":
                os.read(wake_read, 4096)
                _reap()
                continue
            chunk = os.read(0, 65536)
            if not chunk:  # the runtime is gone: its children go too (they die with their parent)
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                try:
                    pid = os.fork()
                except OSError as error:
                    _write({"id": request["id"], "error": str(error)})
                    continue
                if pid == 0:
                    _become(request, [wake_read, wake_write])
                _write({"id": request["id"], "pid": pid})
        _reap()


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _write({"exited": pid, "code": os.waitstatus_to_exitcode(status)})


# --- the runtime's side ------------------------------------------------------------------------


class ZygoteUnavailable(RuntimeError):
    """The zygote could not start or fork: the function starts as a fresh interpreter instead."""


class Forked:
    """A function process forked by the zygote: what the runtime uses of asyncio's Process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        # Ended because the zygote did (the runtime's own failure, like a node's): not the function's crash.
        self.orphaned = False
        self._ended = asyncio.get_running_loop().create_future()

    def ended(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._ended.set_result(code)

    async def wait(self) -> int:
        return int(await asyncio.shield(self._ended))


class Zygote:
    """Starts (and, should it die, starts again) the zygote process; forks function processes from it."""

    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._requests = 0
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._children: dict[int, Forked] = {}
        self._early_exits: dict[int, int] = {}
        self._lock = asyncio.Lock()
        self._failed: str | None = None  # why it could not start: not tried again

    async def spawn(self, env: Mapping[str, str], cwd: Path, log_path: Path) -> Forked:
        async with self._lock:
            if self._failed is not None:
                raise ZygoteUnavailable(self._failed)
            if self._process is None or self._process.returncode is not None:
                try:
                    await self._start()
                except ZygoteUnavailable as error:
                    self._failed = str(error)
                    raise
        assert self._process is not None and self._process.stdin is not None
        self._requests += 1
        number = self._requests
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        request = {"id": number, "env": dict(env), "cwd": str(cwd), "log": str(log_path)}
        self._process.stdin.write((json.dumps(request) + "\n").encode())
        await self._process.stdin.drain()
        pid = await answer
        child = self._children[pid] = Forked(pid)
        if pid in self._early_exits:  # ended before its pid reached us
            child.ended(self._early_exits.pop(pid))
            del self._children[pid]
        return child

    @property
    def pid(self) -> int | None:
        """The zygote's pid while it runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def _start(self) -> None:
        from local.manifests import ROOT

        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as output:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "local.zygote",
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=output,
                start_new_session=True,
                preexec_fn=lambda: die_with_parent(signal.SIGTERM),
                limit=1 << 20,
            )
        assert process.stdout is not None
        line = await process.stdout.readline()
        if not line.startswith(b'{"ready"'):
            await process.wait()
            raise ZygoteUnavailable(f"the zygote did not start (exit {process.returncode}); see {self.log_file}")
        self._process = process
        self._reader = asyncio.create_task(self._read(process))
        log.info("zygote ready (pid %d)", process.pid)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            message = json.loads(line)
            if "exited" in message:
                child = self._children.pop(message["exited"], None)
                if child is not None:
                    child.ended(message["code"])
                else:
                    self._early_exits[message["exited"]] = message["code"]
            elif (answer := self._waiting.pop(message["id"], None)) is not None:
                if "pid" in message:
                    answer.set_result(message["pid"])
                else:
                    answer.set_exception(ZygoteUnavailable(f"the zygote could not fork: {message['error']}"))
        code = await process.wait()
        log.warning("zygote exited with %s; its function processes end with it, it starts again when needed", code)
        for answer in self._waiting.values():
            answer.set_exception(ZygoteUnavailable("the zygote exited"))
        self._waiting.clear()
        for pid, child in list(self._children.items()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            child.orphaned = True
            child.ended(-signal.SIGKILL)
        self._children.clear()

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()  # the zygote ends at end of input
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._reader is not None:
            await self._reader


if __name__ == "__main__":
    main()
