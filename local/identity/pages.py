"""The issuer's few HTML pages: the sign-in form of the code flow, request errors, the logout notice."""

from __future__ import annotations

import html

from aiohttp import web

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def page(title: str, content: str = "", status: int = 200) -> web.Response:
    text = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>\n'
        f"<body><h1>{html.escape(title)}</h1>\n{content}</body></html>\n"
    )
    return web.Response(text=text, status=status, content_type="text/html", headers=PAGE_HEADERS)


def invalid_request(reason: str) -> web.Response:
    """A refusal shown to the browser, for a request whose redirect URI is not proven (nothing goes back to it)."""
    return page("Invalid request", f"<p>{html.escape(reason)}</p>\n", 400)


def sign_in_form(
    realm: str, action: str, error: str | None = None, username: str = "", status: int = 200
) -> web.Response:
    """The form posts the credentials back to the same URL, authorization request and all."""
    alert = f'<p role="alert">{html.escape(error)}</p>\n' if error else ""
    content = (
        f'{alert}<form method="post" action="{html.escape(action)}">\n'
        f'<p><label>Username or email <input name="username" value="{html.escape(username)}" '
        'autocomplete="username" required autofocus></label></p>\n'
        '<p><label>Password <input name="password" type="password" autocomplete="current-password" required>'
        "</label></p>\n"
        '<p><button type="submit">Sign in</button></p>\n</form>\n'
    )
    return page(f"Sign in to {realm}", content, status)
