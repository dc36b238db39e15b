"""The captured mail at a local URL: what notification-send sent, readable without a mail client.

    GET /_local/mail                 the messages, newest first (JSON): from, to, subject, date, url
    GET /_local/mail/{id}            one message as text: its headers and its plain-text body
    GET /_local/mail/{id}?raw=1      the message exactly as received (message/rfc822)

The embedded SMTP server saves each message as a file in the mail folder; these routes read
that folder on every request, so messages appear as they arrive.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiohttp import web

PATH = "/_local/mail"
# The names the SMTP server gives its files (UTC time, then a UUID): nothing else is served.
MESSAGE_ID = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f-]{36}\.eml$")
SHOWN_HEADERS = ("Date", "From", "To", "Subject", "Message-ID")
PROBLEM_JSON = "application/problem+json"


def _parse(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _not_found(request: web.Request, detail: str) -> web.Response:
    body = {"type": "/problems/not-found", "title": "Not found", "status": 404, "detail": detail}
    return web.json_response({**body, "instance": request.path}, status=404, content_type=PROBLEM_JSON)


def summary(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:  # the headers only: the listing never needs a body
        message = BytesHeaderParser(policy=email.policy.default).parse(file)
    return {
        "id": path.name,
        "date": message.get("Date"),
        "from": message.get("From"),
        "to": message.get("To"),
        "subject": message.get("Subject"),
        "url": f"{PATH}/{path.name}",
    }


def text_of(message: EmailMessage) -> str:
    """The headers a reader cares about, a blank line, then the plain-text part."""
    head = "".join(f"{name}: {message[name]}\n" for name in SHOWN_HEADERS if message[name] is not None)
    part = message.get_body(preferencelist=("plain",))
    body = part.get_content() if isinstance(part, EmailMessage) else "(no plain-text part)\n"
    return f"{head}\n{body}"


def routes(mail_dir: Path | None) -> list[web.RouteDef]:
    """The mail routes; with no mail folder (mail goes to an external SMTP server) they answer 404."""

    async def listing(request: web.Request) -> web.Response:
        if mail_dir is None:
            return _not_found(request, "mail goes to the SMTP server in SMTP_URL; nothing is captured here")

        def read() -> list[dict[str, Any]]:
            return [summary(path) for path in sorted(mail_dir.glob("*.eml"), reverse=True)]

        # Off the runtime's event loop, which also proxies requests and delivers events.
        messages = await asyncio.to_thread(read)
        return web.json_response({"count": len(messages), "messages": messages})

    async def one(request: web.Request) -> web.Response:
        name = request.match_info["id"]
        path = mail_dir / name if mail_dir is not None and MESSAGE_ID.match(name) else None
        if path is None or not path.is_file():
            return _not_found(request, f"no captured message {name!r}; GET {PATH} lists them")
        if request.query.get("raw") in ("1", "true"):
            return web.Response(body=path.read_bytes(), content_type="message/rfc822")
        return web.Response(text=text_of(_parse(path)), content_type="text/plain", charset="utf-8")

    return [web.get(PATH, listing), web.get(PATH + "/{id}", one)]
