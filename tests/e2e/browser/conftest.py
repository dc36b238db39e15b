"""Browser tests: the storefront and admin console in headless Chromium (Debian's), driven by Playwright.

Playwright's own browser download cannot work here, so the tests launch the `chromium` package's
binary through `executable_path`; when /usr/bin/chromium is missing the set-up installs it with
`apt-get install -y chromium` (as root; CI is a clean Debian machine) and says so. A failing test
leaves a screenshot and the page's text in .local/test-artifacts/browser/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.tooling import unavailable
from tests.e2e.conftest import Shop

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / ".local" / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORDS = {"jane": "jane-password", "john": "john-password", "admin": "admin-password"}
PICTURES = "/storefront/images/products"


def chromium() -> str:
    """Debian's Chromium, installed with apt-get when it is missing (root only)."""
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        unavailable("Chromium is missing: install Debian's package with `apt-get install -y chromium`")
    print("\nbrowser tests: /usr/bin/chromium is missing; installing it with `apt-get install -y chromium`", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=False)
        if done.returncode != 0:
            unavailable(f"`{' '.join(command)}` failed:\n{done.stderr[-2000:]}")
    return shutil.which("chromium") or CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, for one test module at a time: Playwright's sync API keeps an event loop running in the
    main thread while it is started, and tests elsewhere call asyncio.run()."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=LAUNCH_ARGS)
        yield launched
        launched.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.stash[FAILED] = report.failed


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def new_page(browser: Any, request: pytest.FixtureRequest, stack: Any) -> Iterator[Callable[..., Any]]:
    """Opens pages, each in a context of its own (its own storage: another shopper); on failure every page
    left open is kept as a screenshot and its text."""
    contexts: list[Any] = []

    def open_page(width: int = 1280, height: int = 860) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height}, base_url=stack.url)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        return page

    yield open_page
    if request.node.stash.get(FAILED, False):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for index, context in enumerate(contexts):
            for number, page in enumerate(context.pages):
                name = f"{request.node.name}-{index}-{number}"
                try:
                    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
                    (ARTIFACTS / f"{name}.txt").write_text(f"{page.url}\n\n{page.inner_text('body')}")
                except Exception as error:  # noqa: BLE001 - a page that died leaves what it can
                    (ARTIFACTS / f"{name}.txt").write_text(f"no screenshot: {error}")
        print(f"\nbrowser test failed: screenshots in {ARTIFACTS}")
    for context in contexts:
        context.close()


def sign_in(page: Any, username: str) -> None:
    """Through the real sign-in page, as a person does."""
    page.get_by_role("button", name="Sign in").first.click()
    page.get_by_label("Username or email").fill(username)
    page.get_by_label("Password").fill(PASSWORDS[username])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()


@pytest.fixture
def marker() -> str:
    """A word no other test's products have: searching for it shows this test's products only."""
    return f"zq{uuid.uuid4().hex[:6]}"


def product(shop: Shop, name: str, category: str, price: float, units: int, picture: str = "pixel_8") -> str:
    """A product with a demo picture and stock, made through the API as an admin would."""
    sku = f"b_{uuid.uuid4().hex[:10]}"
    admin = shop.people.admin()
    body = {"sku": sku, "name": name, "category": category, "price": price, "image": f"{PICTURES}/{picture}.svg"}
    created = shop.ingress.call("product-create", "POST", "/api/products", json=body, headers=admin)
    assert created.status_code == 201, created.text
    stocked = shop.ingress.call("inventory-restock", "PUT", f"/api/inventory/{sku}", json={"quantity": units},
                                headers=admin)  # fmt: skip
    assert stocked.status_code in (200, 201), stocked.text
    return sku
