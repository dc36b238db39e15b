"""The local SMTP server, a process of its own: `python -m local.servers.smtpd --port N --mail-dir DIR`.

Every message it accepts is saved as a .eml file in the mail folder. It can be told to refuse
mail for a while, as a real server does when its disk is full or it is being restarted: the
refusals are written to a small JSON file in the mail folder (see `Refusals`), which the server
reads before each message, so they take effect at once and survive its restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

REFUSALS_FILE = ".refusals.json"
log = logging.getLogger("local.smtp")


class Refusals:
    """Refusals asked of the server: the next `count` messages, and every message until `until`.

    The file is read and updated under an exclusive lock, by the server (which counts refusals
    down) and by whoever asks for them (tests, the runtime).
    """

    def __init__(self, mail_dir: Path) -> None:
        self.path = mail_dir / REFUSALS_FILE

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            text = handle.read()
            state: dict[str, Any] = json.loads(text) if text.strip() else {}
            before = dict(state)
            yield state
            if state != before:
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps(state))

    def next(self, count: int, code: int = 451) -> None:
        with self._locked() as state:
            state.update(count=count, code=code)

    def until(self, deadline: float, code: int = 451) -> None:
        """Refuses every message until the Unix time `deadline` (0 ends it)."""
        with self._locked() as state:
            state.update(until=deadline, code=code)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def remaining(self) -> int:
        with self._locked() as state:
            return int(state.get("count", 0))

    def take(self) -> int | None:
        """The code to refuse the current message with, or None to accept it."""
        if not self.path.exists():
            return None
        with self._locked() as state:
            code = int(state.get("code", 451))
            if float(state.get("until", 0)) > time.time():
                return code
            if int(state.get("count", 0)) > 0:
                state["count"] = int(state["count"]) - 1
                return code
        return None


class MailDrop:
    """aiosmtpd handler saving each message as a .eml file, or refusing as asked."""

    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir
        self.refusals = Refusals(mail_dir)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        code = self.refusals.take()
        if code is not None:
            enhanced = "4.3.0" if code < 500 else "5.3.0"
            return f"{code} {enhanced} Refused on request; try later"
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


async def serve(host: str, port: int, mail_dir: Path) -> None:
    mail_dir.mkdir(parents=True, exist_ok=True)
    handler = MailDrop(mail_dir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname=host), host, port)
    stopped = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    print(f"smtp listening on {host}:{port}, saving mail to {mail_dir}", flush=True)
    async with server:
        await stopped.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.servers.smtpd", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mail-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.host, args.port, args.mail_dir))


if __name__ == "__main__":
    main()
