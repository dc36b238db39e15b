"""Knative Serving on a laptop: one ingress, a process per service, scale from and to zero."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from local.manifests import ROOT, KnativeService
from local.metrics import COLD_START_SECONDS, COLD_STARTS
from local.supervision import Exit, Lifecycle, State, kill_leftovers
from local.zygote import Forked, Zygote, ZygoteUnavailable

log = logging.getLogger("local.serving")
PATH_PREFIX = "/ksvc/"
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
        "Host",
    )
)
START_TIMEOUT_SECONDS = 30.0
# How long a started process may answer "not ready" before the requests waiting for it get a 503.
UNREADY_GRACE_SECONDS = 2.0
STOP_GRACE_SECONDS = 10.0


def problem_body(status: int, title: str, detail: str) -> bytes:
    body = {"type": f"/problems/{title.lower().replace(' ', '-')}", "title": title, "status": status, "detail": detail}
    return json.dumps(body).encode()


def problem(status: int, title: str, detail: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=problem_body(status, title, detail),
        content_type="application/problem+json",
        headers=headers,
    )


async def _detail(response: aiohttp.ClientResponse) -> str:
    """What a problem+json answer says went wrong (its detail), else its status."""
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return f"readiness probe answered {response.status}"
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail) if detail else f"readiness probe answered {response.status}"


class NotReady(RuntimeError):
    """The revision cannot take requests now; try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Exchange:
    """A response from a revision, or the runtime's problem in its place."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @classmethod
    def problem(cls, status: int, title: str, detail: str, headers: Mapping[str, str] | None = None) -> Exchange:
        content = {"Content-Type": "application/problem+json", **(headers or {})}
        return cls(status, content, problem_body(status, title, detail))


@dataclass
class Revision:
    """The one local replica of a Knative Service: a functions-framework/gunicorn process."""

    service: KnativeService
    env: Mapping[str, str]
    log_dir: Path
    idle_seconds: float
    port: int | None = None
    # Forks function processes when set (local/zygote.py); else each starts as a new interpreter.
    zygote: Zygote | None = None
    process: asyncio.subprocess.Process | Forked | None = None
    in_flight: int = 0
    last_active: float = field(default_factory=time.monotonic)
    cold_starts: int = 0
    last_cold_start_seconds: float | None = None
    # A suspended service has no ready revision: requests get 503, as in a cluster
    # where the service's pods cannot start (tests use it to take a service down).
    suspended: bool = False
    # Restarts, last exit, CrashLoopBackOff: what the kubelet reports of the pod.
    lifecycle: Lifecycle = field(default_factory=lambda: Lifecycle(state=State.SCALED_TO_ZERO))
    _starting: asyncio.Future[str] | None = None
    _watchers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None and self.port is not None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, http: aiohttp.ClientSession) -> str:
        """The base URL of a ready process, starting one first if scaled to zero.

        Raises NotReady while the revision is backing off after crashes (CrashLoopBackOff).
        """
        if self.running and self._starting is None:
            return self.base_url
        if self.process is not None:
            self.exited(self.process)  # died just now: note it before deciding what to do
        if self._starting is None:
            wait = self.lifecycle.backing_off()
            if wait > 0:
                last = self.lifecycle.last_exit
                raise NotReady(
                    f"{self.name} is in CrashLoopBackOff ({last.reason if last else 'crashed'}); "
                    f"next start in {wait:.0f} s",
                    retry_after=max(1, int(wait + 0.999)),
                )
            self._starting = asyncio.get_running_loop().create_future()
            try:
                await self._start(http)
                self._starting.set_result(self.base_url)
            except Exception as error:
                self._starting.set_exception(error)
                self._starting.exception()  # the waiters below get it; no "never retrieved" noise
                raise
            finally:
                starting, self._starting = self._starting, None
            return starting.result()
        return await asyncio.shield(self._starting)

    async def _start(self, http: aiohttp.ClientSession) -> None:
        from local.servers import free_port

        began = time.monotonic()
        after_crash = self.lifecycle.state in (State.RESTARTING, State.CRASH_LOOP_BACK_OFF)
        self.lifecycle.starting()
        self.port = free_port()
        env = {
            **os.environ,
            **self.env,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "K_SERVICE": self.name,
            "K_CONFIGURATION": self.name,
            "K_REVISION": f"{self.name}-00001",
            "PYTHONUNBUFFERED": "1",
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        process: asyncio.subprocess.Process | Forked
        try:
            if self.zygote is None:
                raise ZygoteUnavailable("no zygote")
            process = self.process = await self.zygote.spawn(env, ROOT, self.log_dir / f"{self.name}.log")
        except ZygoteUnavailable as error:
            if self.zygote is not None:
                log.warning("%s: %s; starting it as a new interpreter", self.name, error)
            process = self.process = await self._exec(env)
        deadline = began + START_TIMEOUT_SECONDS
        probe = f"{self.base_url}{self.service.readiness_path}"
        unready_since: float | None = None
        not_ready: NotReady | None = None
        while True:
            if self.process is not process:  # stop() ran meanwhile (the runtime is shutting down)
                raise RuntimeError(f"{self.name} was stopped while starting")
            if process.returncode is not None:
                reason = f"exited with {process.returncode} while starting; see {self.log_dir / self.name}.log"
                self.process = None
                self.lifecycle.crashed(Exit.of(process.returncode, reason))
                raise RuntimeError(f"{self.name} {reason}")
            try:
                async with http.get(probe, timeout=aiohttp.ClientTimeout(total=3)) as response:
                    if response.status == 200:
                        break
                    # Serving, but a server it needs is down: no use holding requests for long.
                    unready_since = unready_since or time.monotonic()
                    if time.monotonic() - unready_since > UNREADY_GRACE_SECONDS:
                        not_ready = NotReady(f"{self.name} is not ready: {await _detail(response)}", retry_after=2)
                        break
            except (TimeoutError, aiohttp.ClientError):
                pass
            if time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError(f"{self.name} was not ready within {START_TIMEOUT_SECONDS:.0f}s")
            await asyncio.sleep(0.02)
        self.cold_starts += 1
        self.lifecycle.running()
        if after_crash:
            self.lifecycle.restarted()
        watcher = asyncio.create_task(self._watch(process))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        self.last_cold_start_seconds = time.monotonic() - began
        COLD_STARTS.labels(self.name).inc()
        COLD_START_SECONDS.labels(self.name).observe(self.last_cold_start_seconds)
        self.last_active = time.monotonic()
        log.info("%s started on port %s in %.2fs", self.name, self.port, self.last_cold_start_seconds)
        if not_ready is not None:
            # Locally the process stays up and gets the next requests, answering for itself
            # (503 while the server it needs is down); Knative would hold them until ready.
            log.warning("%s", not_ready)
            raise not_ready

    async def _exec(self, env: Mapping[str, str]) -> asyncio.subprocess.Process:
        from local.servers import die_with_parent

        with open(self.log_dir / f"{self.name}.log", "ab") as log_file:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "functions.shared.serve",
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: die_with_parent(signal.SIGTERM),
            )

    async def _watch(self, process: asyncio.subprocess.Process | Forked) -> None:
        await process.wait()
        self.exited(process)

    def exited(self, process: asyncio.subprocess.Process | Forked) -> None:
        """Notes that `process` ended on its own (a crash), unless stop() ended it."""
        if self.process is not process or process.returncode is None:
            return
        self.process = None
        # The container is gone with its main process: so are its other processes (a gunicorn
        # worker would otherwise finish its request for a master that no longer exists).
        kill_leftovers(process.pid)
        if isinstance(process, Forked) and process.orphaned:
            # The zygote died and took its forks along: the runtime's failure, not the function's,
            # so no crash counts against it (no CrashLoopBackOff); it starts again like a scaled-to-zero one.
            self.lifecycle.stopped(State.SCALED_TO_ZERO)
            log.warning("%s ended with the zygote (pid %d); it starts again when needed", self.name, process.pid)
            return
        exit = Exit.of(process.returncode)
        delay = self.lifecycle.crashed(exit)
        if self.service.min_scale > 0:
            when = "now" if delay == 0 else f"in {delay:.0f} s (CrashLoopBackOff)"
        else:
            when = "at the next request" if delay == 0 else f"at a request after {delay:.0f} s (CrashLoopBackOff)"
        log.warning("%s %s (pid %d); it starts again %s", self.name, exit.reason, process.pid, when)

    async def stop(self) -> None:
        process, self.process = self.process, None
        self.lifecycle.stopped(State.SCALED_TO_ZERO)
        if process is None or process.returncode is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
        except (ProcessLookupError, PermissionError):
            pass
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        log.info("%s stopped", self.name)

    def below_min_scale(self) -> bool:
        return (
            self.service.min_scale > 0
            and not self.suspended
            and not self.running
            and self._starting is None
            and self.lifecycle.backing_off() == 0
        )

    def idle(self, now: float) -> bool:
        return (
            self.running
            and self._starting is None
            and self.service.min_scale == 0
            and self.in_flight == 0
            and now - self.last_active >= self.idle_seconds
        )

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "running": self.running,
            "port": self.port if self.running else None,
            "pid": self.process.pid if self.running and self.process else None,
            "minScale": self.service.min_scale,
            "idleSeconds": self.idle_seconds,
            "inFlight": self.in_flight,
            "coldStarts": self.cold_starts,
            "suspended": self.suspended,
            "lastColdStartSeconds": self.last_cold_start_seconds,
            **self.lifecycle.as_json(),
        }


class Ingress:
    """Routes by Host (`<service>.<namespace>[...]`) or path (`/ksvc/<service>/...`) to revisions."""

    def __init__(self, revisions: Mapping[str, Revision], namespace: str, default_service: str | None = None) -> None:
        self.revisions = revisions
        self.namespace = namespace
        self.default_service = default_service
        self.http: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self.http:
            await self.http.close()

    def route(self, request: web.Request) -> tuple[str | None, str]:
        """(service name, path to forward) for a request."""
        host = request.host.split(":")[0].lower()
        labels = host.split(".")
        if len(labels) >= 2 and labels[1] == self.namespace and labels[0] in self.revisions:
            return labels[0], request.path_qs
        if request.path.startswith(PATH_PREFIX):
            name, _, rest = request.path[len(PATH_PREFIX) :].partition("/")
            query = f"?{request.query_string}" if request.query_string else ""
            return name, f"/{rest}{query}"
        return self.default_service, request.path_qs

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name, path = self.route(request)
        revision = self.revisions.get(name or "")
        if revision is None:
            return problem(
                404,
                "Unknown service",
                f"no Knative Service {name!r} in namespace {self.namespace}; address one as "
                f"Host: <service>.{self.namespace}.svc.cluster.local or {PATH_PREFIX}<service>/<path>; "
                f"services: {sorted(self.revisions)}",
            )
        return await self.forward(revision, request, path)

    async def forward(self, revision: Revision, request: web.Request, path: str) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Forwarded-Host"] = request.host
        headers["X-Forwarded-Proto"] = request.scheme
        if request.remote:
            headers["X-Forwarded-For"] = request.remote
        answer = await self.exchange(revision, request.method, path, headers, await request.read())
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body)

    async def exchange(
        self,
        revision: Revision,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout_seconds: float | None = None,
    ) -> Exchange:
        """One request to a revision, starting it first if it is scaled to zero (the activator's job).

        The ingress forwards client requests through here, and the event dispatchers deliver
        through here too, so both count as traffic that keeps a revision up.
        """
        assert self.http is not None
        if revision.suspended:
            return Exchange.problem(
                503, "Service unavailable", f"{revision.name} has no ready revision", {"Retry-After": "5"}
            )
        revision.in_flight += 1
        try:
            try:
                base = await revision.ready(self.http)
            except NotReady as error:
                return Exchange.problem(503, "Service unavailable", str(error), {"Retry-After": str(error.retry_after)})
            except RuntimeError as error:
                return Exchange.problem(503, "Service unavailable", str(error), {"Retry-After": "5"})
            limit = min(timeout_seconds or revision.service.timeout_seconds, revision.service.timeout_seconds)
            timeout = aiohttp.ClientTimeout(total=limit)
            try:
                async with self.http.request(
                    method, base + path, headers=headers, data=body or None, timeout=timeout, allow_redirects=False
                ) as upstream:
                    payload = await upstream.read()
                    reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                    return Exchange(upstream.status, reply_headers, payload)
            except TimeoutError:
                detail = f"{revision.name} did not answer within {limit:.0f}s"
                return Exchange.problem(504, "Gateway timeout", detail)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionError) as error:
                # The process went away under the request (killed, crashed): the queue-proxy's
                # answer, retryable; the next request starts a new process.
                detail = f"{revision.name} closed the connection before answering ({type(error).__name__})"
                return Exchange.problem(503, "Service unavailable", detail, {"Retry-After": "1"})
            except aiohttp.ClientError as error:
                return Exchange.problem(502, "Bad gateway", f"{revision.name} failed: {error}")
        finally:
            revision.in_flight -= 1
            revision.last_active = time.monotonic()


class Autoscaler:
    """Starts min-scale services, stops idle ones, notices crashed ones (like a pod restart)."""

    def __init__(self, revisions: Mapping[str, Revision], http: Callable[[], aiohttp.ClientSession]) -> None:
        self.revisions = revisions
        self.http = http
        self._restarts: set[asyncio.Task[None]] = set()

    async def start_min_scale(self) -> None:
        await asyncio.gather(*(r.ready(self.http()) for r in self.revisions.values() if r.service.min_scale > 0))

    async def run(self, interval: float = 0.5) -> None:
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            self._restarts = {t for t in self._restarts if not t.done()}
            for revision in self.revisions.values():
                if revision.idle(now):
                    await revision.stop()
                if revision.below_min_scale() and not self._restarts:
                    self._restarts.add(asyncio.create_task(self._restart(revision)))

    async def _restart(self, revision: Revision) -> None:
        try:
            await revision.ready(self.http())
        except RuntimeError as error:
            log.warning("%s could not start: %s", revision.name, error)

    def cancel_restarts(self) -> None:
        """Stops restarting services (the runtime is shutting down)."""
        for task in self._restarts:
            task.cancel()
