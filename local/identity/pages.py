"""The issuer's few HTML pages: the sign-in form of the code flow, request errors, the logout notice."""

from __future__ import annotations

import base64
import hashlib
import html

from aiohttp import web

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# The pages wear the storefront's look (gateway/storefront/style.css, in short), inline: the page's
# policy allows this one stylesheet by its hash and nothing else.
PAGE_STYLE = """
:root { color-scheme: light dark; --bg: #f7f7f9; --surface: #fff; --text: #1c1d21; --muted: #5b5f6b;
  --border: #d5d7de; --accent: #1f5fd1; --accent-text: #fff; --danger: #b3261e; --error-bg: #fdecea;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.5; }
@media (prefers-color-scheme: dark) { :root { --bg: #15161a; --surface: #1f2127; --text: #ececf1;
  --muted: #a4a8b4; --border: #3a3d47; --accent: #7aa7ff; --accent-text: #0b1020; --danger: #ff8a80;
  --error-bg: #3b1f1d; } }
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; background: var(--bg); color: var(--text); }
.bar { display: flex; align-items: center; gap: .5rem; padding: .75rem clamp(1rem, 4vw, 2.5rem);
  background: var(--surface); border-bottom: 1px solid var(--border); font-size: 1.25rem; font-weight: 700; }
.bar svg { width: 1.75rem; height: 1.75rem; }
main { max-width: 26rem; margin: 3rem auto; padding: 0 1rem; }
.card { padding: 1.5rem; background: var(--surface); border: 1px solid var(--border); border-radius: 8px; }
h1 { margin: 0 0 1rem; font-size: 1.5rem; }
label { display: block; margin-bottom: .75rem; font-weight: 600; }
input { display: block; width: 100%; margin-top: .25rem; padding: .5rem .6rem; border: 1px solid var(--border);
  border-radius: 8px; background: var(--surface); color: var(--text); font: inherit; }
input:focus-visible, button:focus-visible, a:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
button { width: 100%; padding: .6rem 1rem; border: 1px solid var(--accent); border-radius: 8px;
  background: var(--accent); color: var(--accent-text); font: inherit; font-weight: 600; cursor: pointer; }
[role=alert] { padding: .75rem 1rem; border: 1px solid var(--danger); border-radius: 8px; background: var(--error-bg); }
.back { display: inline-block; margin-top: 1rem; color: var(--accent); }
.hint { color: var(--muted); font-size: .9rem; }
"""
BAG_ICON = (
    '<svg viewBox="0 0 64 64" aria-hidden="true"><rect width="64" height="64" rx="14" fill="#1f5fd1"/>'
    '<path d="M16 24h32l-3 28H19z" fill="#fff"/><path d="M24 26v-6a8 8 0 0 1 16 0v6" fill="none" stroke="#fff" '
    'stroke-width="4" stroke-linecap="round"/></svg>'
)
PAGE_STYLE_HASH = base64.b64encode(hashlib.sha256(PAGE_STYLE.encode()).digest()).decode()
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": f"default-src 'none'; style-src 'sha256-{PAGE_STYLE_HASH}'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def page(title: str, content: str = "", status: int = 200, *, realm: str = "", back: str | None = None) -> web.Response:
    """A page in the shop's look, under a bar naming the realm; `back`: where "Back to the shop" leads."""
    link = f'<a class="back" href="{html.escape(back)}">&larr; Back to the shop</a>\n' if back else ""
    text = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head>\n"
        f'<body><header class="bar">{BAG_ICON}<span>{html.escape(realm)}</span></header>\n'
        f'<main><div class="card"><h1>{html.escape(title)}</h1>\n{content}</div>\n{link}</main></body></html>\n'
    )
    return web.Response(text=text, status=status, content_type="text/html", headers=PAGE_HEADERS)


def invalid_request(reason: str, realm: str = "") -> web.Response:
    """A refusal shown to the browser, for a request whose redirect URI is not proven (nothing goes back to it)."""
    return page("Invalid request", f"<p>{html.escape(reason)}</p>\n", 400, realm=realm)


def sign_in_form(
    realm: str, action: str, error: str | None = None, username: str = "", status: int = 200, *, back: str
) -> web.Response:
    """The form posts the credentials back to the same URL, authorization request and all; `back` is the
    client's site (its redirect URI's origin)."""
    alert = f'<p role="alert">{html.escape(error)}</p>\n' if error else ""
    content = (
        f'{alert}<form method="post" action="{html.escape(action)}">\n'
        f'<p><label>Username or email <input name="username" value="{html.escape(username)}" '
        'autocomplete="username" required autofocus></label></p>\n'
        '<p><label>Password <input name="password" type="password" autocomplete="current-password" required>'
        "</label></p>\n"
        '<p><button type="submit">Sign in</button></p>\n</form>\n'
    )
    return page(f"Sign in to {realm}", content, status, realm=realm, back=back)
