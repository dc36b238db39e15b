"""The storefront stays CSP-safe and only calls the API the gateway routes (static checks, no network)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import static

ROOT = Path(__file__).resolve().parents[2]
STOREFRONT = ROOT / "gateway" / "storefront"
INDEX = (STOREFRONT / "index.html").read_text()
APP = (STOREFRONT / "app.js").read_text()
STYLE = (STOREFRONT / "style.css").read_text()
ISSUER = "https://id.shop.example/realms/shop"

# A string or template literal holding an API path: '/api/products', `/api/orders/${n}/cancel`.
API_LITERAL = re.compile(r"""(['"`])(/api/[^'"`\s]*)\1""")
# A call of the storefront's api() helper, with its options object when there is one.
API_CALL = re.compile(r"""\bapi\(\s*(['"`])(/api/[^'"`\s]*)\1\s*(?:,\s*\{([^}]*)\})?""")


class Page(HTMLParser):
    """Collects what the checks need: tags with their attributes, script bodies, each form's data-field names."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_bodies: list[str] = []
        self.form_fields: dict[str, set[str]] = {}  # form id -> the data-field names inside it
        self._in_script = False
        self._form: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append((tag, found))
        self._in_script = tag == "script"
        if tag == "form":
            self._form = found.get("id") or ""
            self.form_fields[self._form] = set()
        elif self._form is not None and found.get("data-field"):
            self.form_fields[self._form].add(str(found["data-field"]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False
        if tag == "form":
            self._form = None

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_bodies.append(data)

    def urls(self) -> list[str]:
        return [value for _, attrs in self.tags for name, value in attrs.items() if name in ("src", "href") and value]


@pytest.fixture(scope="module")
def page() -> Page:
    parser = Page()
    parser.feed(INDEX)
    parser.close()
    return parser


def template(path: str) -> str:
    """An API path as a comparable template: `/api/orders/${n}/cancel?x` and /api/orders/{orderNumber}/cancel alike."""
    path = re.sub(r"\$\{[^}]*\}", "{}", path)
    return re.sub(r"\{[^}]*\}", "{}", path.split("?", 1)[0]).rstrip("/")


@pytest.fixture(scope="module")
def routes() -> dict[tuple[str, str], dict[str, Any]]:
    """(path template, method) -> route entry, from the gateway's route table."""
    document = yaml.safe_load((ROOT / "gateway" / "routes.yaml").read_text())
    defaults = document.get("defaults", {})
    return {
        (template(route["path"]), method): {**defaults, **route}
        for route in document["routes"]
        for method in route["methods"]
    }


def api_calls() -> list[tuple[str, str, str]]:
    """(path template, method, options source) of every api(...) call in app.js."""
    calls = []
    for match in API_CALL.finditer(APP):
        options = match.group(3) or ""
        method = re.search(r"method:\s*['\"]([A-Z]+)['\"]", options)
        calls.append((template(match.group(2)), method.group(1) if method else "GET", options))
    return calls


# --- index.html ------------------------------------------------------------------------------


def test_index_has_no_inline_script(page: Page) -> None:
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts, "index.html loads no script at all"
    assert all(attrs.get("src") for attrs in scripts), "every <script> must load a file (CSP: no inline script)"
    assert [body for body in page.script_bodies if body.strip()] == []


def test_index_has_no_event_handler_or_style_attributes(page: Page) -> None:
    handlers = [(tag, name) for tag, attrs in page.tags for name in attrs if name.lower().startswith("on")]
    styled = [tag for tag, attrs in page.tags if "style" in attrs]
    assert handlers == []
    assert styled == []
    assert "<style" not in INDEX.lower()
    assert "javascript:" not in INDEX.lower()


def test_index_loads_the_storefront_script_and_stylesheet(page: Page) -> None:
    scripts = [attrs.get("src") for tag, attrs in page.tags if tag == "script"]
    stylesheets = [attrs.get("href") for tag, attrs in page.tags if tag == "link" and attrs.get("rel") == "stylesheet"]
    assert scripts == ["/storefront/app.js"]
    assert stylesheets == ["/storefront/style.css"]


def test_index_links_nothing_off_site(page: Page) -> None:
    """No CDN: every URL is same-origin (a path or a fragment), so default-src 'self' covers it."""
    urls = page.urls()
    assert urls
    assert [url for url in urls if not url.startswith(("/", "#")) or url.startswith("//")] == []


def test_every_input_has_a_label(page: Page) -> None:
    labelled = {attrs.get("for") for tag, attrs in page.tags if tag == "label"}
    fields = [attrs for tag, attrs in page.tags if tag in ("input", "select", "textarea")]
    assert fields
    assert [f.get("id") for f in fields if f.get("type") != "hidden" and f.get("id") not in labelled] == []


def test_every_element_app_looks_up_by_id_is_in_the_page(page: Page) -> None:
    ids = {attrs.get("id") for _, attrs in page.tags}
    looked_up = set(re.findall(r"""\$\(\s*'#([\w-]+)'""", APP)) | set(re.findall(r"getElementById\('([\w-]+)'\)", APP))
    assert looked_up
    assert sorted(looked_up - ids) == []


@pytest.mark.parametrize(
    ("form", "api", "schema", "path_parameters"),
    [
        ("product-form", "catalog", "ProductCreate", set()),
        ("restock-form", "inventory", "Restock", {"sku"}),
        ("product-form", "catalog", "ProductUpdate", {"sku"}),
        ("search-form", "catalog", None, set()),
    ],
)
def test_form_fields_are_named_as_the_api_names_them(
    page: Page, form: str, api: str, schema: str | None, path_parameters: set[str]
) -> None:
    """A problem's field pointer (/price, or a query parameter's name) finds its input by data-field."""
    fragment = yaml.safe_load((ROOT / "functions" / api / "api.yaml").read_text())
    if schema is None:
        names = {p["name"] for p in fragment["paths"]["/api/products"]["get"]["parameters"]}
    else:
        names = set(fragment["components"]["schemas"][schema]["properties"]) | path_parameters
    fields = page.form_fields[form]
    assert fields
    assert sorted(fields - names) == []


@pytest.mark.parametrize("path", ["/", "/storefront/app.js", "/storefront/style.css"])
def test_the_gateway_serves_the_files_with_the_policy(path: str) -> None:
    response = static.storefront(path, ISSUER)
    policy = response.headers["Content-Security-Policy"]
    assert response.status_code == 200
    assert "default-src 'self'" in policy
    assert "connect-src 'self' https://id.shop.example;" in policy
    assert "script-src" not in policy and "unsafe-inline" not in policy  # the storefront must not need them
    kind = {"/": "text/html", ".js": "javascript", ".css": "text/css"}[Path(path).suffix or "/"]
    assert kind in response.headers["Content-Type"]


# --- app.js and style.css --------------------------------------------------------------------


@pytest.mark.parametrize(
    "forbidden", ["innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function", "document.write"]
)
def test_app_builds_the_page_without_html_strings_or_eval(forbidden: str) -> None:
    assert forbidden not in APP


def test_app_attaches_handlers_with_add_event_listener() -> None:
    assert "addEventListener(" in APP
    assert re.search(r"\.on[a-z]+\s*=", APP) is None  # no element.onclick = ...
    assert re.search(r"\.style\.", APP) is None  # no inline styles set from script either


def test_styles_load_nothing_from_elsewhere() -> None:
    assert re.search(r"@import|url\(\s*['\"]?(https?:)?//", STYLE) is None


def test_every_api_path_in_app_is_a_gateway_route(routes: dict[tuple[str, str], dict[str, Any]]) -> None:
    literals = {template(match.group(2)) for match in API_LITERAL.finditer(APP)}
    known = {path for path, _ in routes}
    assert literals, "app.js names no API path"
    assert sorted(literals - known) == []


def test_every_api_call_uses_a_routed_method_and_signs_in_when_the_route_needs_it(
    routes: dict[tuple[str, str], dict[str, Any]],
) -> None:
    calls = api_calls()
    assert calls
    # Every call site was understood (a path the patterns cannot read would escape the check).
    assert len(calls) == len(re.findall(r"(?<!function )\bapi\(", APP))
    for path, method, options in calls:
        route = routes.get((path, method))
        assert route is not None, f"{method} {path} is not in gateway/routes.yaml"
        if route["auth"] != "public":
            assert re.search(r"\bauth:\s*true\b", options), f"{method} {path} needs a token ({route['auth']})"


def test_app_calls_every_operation_the_storefront_offers() -> None:
    calls = {(path, method) for path, method, _ in api_calls()}
    expected = {
        ("/api/products", "GET"),
        ("/api/products/{}", "GET"),
        ("/api/inventory", "GET"),
        ("/api/orders", "POST"),
        ("/api/orders", "GET"),
        ("/api/orders/{}/cancel", "POST"),
        ("/api/products", "POST"),
        ("/api/products/{}", "PATCH"),
        ("/api/inventory/{}", "GET"),
        ("/api/inventory/{}", "PUT"),
        ("/api/deadletters", "GET"),
        ("/api/deadletters/{}", "GET"),
        ("/api/deadletters/{}/replay", "POST"),
    }
    assert expected - calls == set()


def test_app_signs_in_with_pkce_s256_and_orders_idempotently() -> None:
    assert re.search(r"code_challenge_method:\s*'S256'", APP)
    assert "crypto.subtle.digest('SHA-256'" in APP
    assert "crypto.getRandomValues" in APP
    assert "'Idempotency-Key'" in APP
    assert "crypto.randomUUID()" in APP
    assert "history.replaceState" in APP


def test_app_is_valid_javascript() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: cannot syntax-check gateway/storefront/app.js")
    result = subprocess.run(
        [node, "--check", str(STOREFRONT / "app.js")], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
