"""The local SMTP server (local/servers/smtpd.py) in a process of its own, capturing every message it gets."""

from __future__ import annotations

import email
import email.policy
import socket
import sys
import time
from email.message import EmailMessage
from pathlib import Path

from local.manifests import ROOT
from local.servers.process import HOST, ServerProcess
from local.servers.smtpd import Refusals


class EmbeddedSmtp(ServerProcess):
    """The local SMTP server (local/servers/smtpd.py) in a process of its own, capturing every message it gets."""

    name = "smtp"

    def __init__(self, mail_dir: Path, port: int | None = None, log_dir: Path | None = None) -> None:
        super().__init__(port, log_dir)
        self.mail_dir = mail_dir
        self.url = f"smtp://{HOST}:{self.port}"
        self.refusals = Refusals(mail_dir)
        self.workdir = ROOT  # `-m local.servers.smtpd` resolves from the repository root

    def start(self) -> None:
        self.refusals.clear()  # refusals asked of an earlier run end with it; a crash keeps them
        super().start()

    def _command(self) -> list[str]:
        return [
            sys.executable, "-m", "local.servers.smtpd",
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
