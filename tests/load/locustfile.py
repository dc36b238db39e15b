"""Locust shoppers and an admin against the gateway: browse, search, view, sign in, order, sometimes cancel; restock.

Run by `./taskw load` (tests/load/__main__.py), or by hand: `locust -f tests/load/locustfile.py --host URL`.
Shoppers sign in as a browser does (authorization code with PKCE through the realm's login form, so it
works against Keycloak too), with LOAD_USERS (default jane and john); the admin with LOAD_ADMIN (admin).
Every request is named by its route, so the summary reads per route. Answers a shopper can expect (409:
someone bought the last one; 429: slow down) count as successes; anything else that is not 2xx fails.
When LOAD_REPORT names a file, the status codes per route are written there at the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import secrets
import uuid
from collections import Counter, defaultdict
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

from locust import HttpUser, between, events, task

WORDS = ("pixel", "phone", "pro", "watch", "usb", "air", "galaxy", "charger", "case", "book")
ADDRESS = {
    "name": "Load Tester",
    "line1": "1 Test Street",
    "city": "Springfield",
    "postalCode": "12345",
    "country": "US",
}
EXPECTED = {409, 429}  # sold out meanwhile, rate limited: a shop's normal answers under load
STATUSES: defaultdict[str, Counter[int]] = defaultdict(Counter)


def _credentials(variable: str, default: str) -> list[tuple[str, str]]:
    """`user:password,user2:password2`; a bare name means its demo password (<name>-password)."""
    pairs = []
    for entry in os.environ.get(variable, default).split(","):
        name, _, password = entry.strip().partition(":")
        pairs.append((name, password or f"{name}-password"))
    return pairs


class _FormAction(HTMLParser):
    """The first form's action: where a login page wants its username and password."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "form" and self.action is None:
            self.action = dict(attrs).get("action") or ""


@events.request.add_listener
def _count(name: str, response: Any, exception: Exception | None, **_: Any) -> None:
    STATUSES[name][getattr(response, "status_code", 0) or 0] += 1


@events.quitting.add_listener
def _report(**_: Any) -> None:
    path = os.environ.get("LOAD_REPORT")
    if path:
        with open(path, "w") as handle:
            json.dump({name: {str(k): v for k, v in codes.items()} for name, codes in STATUSES.items()}, handle)


class Visitor(HttpUser):
    """What every simulated person shares: the API, and signing in as a browser does."""

    abstract = True
    token: str | None = None
    products: list[dict[str, Any]]

    def call(self, method: str, path: str, name: str, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        with self.client.request(method, path, name=name, headers=headers, catch_response=True, **kwargs) as answer:
            if answer.status_code == 401 and self.token:
                answer.success()  # the token ran out: sign in again, next time round
                self.token = None
            elif answer.ok or answer.status_code in EXPECTED:
                answer.success()
            else:
                answer.failure(f"{answer.status_code}: {answer.text[:200]}")
            return answer

    def sign_in(self, username: str, password: str) -> None:
        """Authorization code with PKCE through the realm's login form."""
        issuer = self.client.get("/storefront/config.json", name="/storefront/config.json").json()["issuer"]
        discovery = self.client.get(f"{issuer}/.well-known/openid-configuration", name="discovery").json()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        redirect = f"{self.host.rstrip('/')}/"
        state = secrets.token_urlsafe(12)
        params = {"response_type": "code", "client_id": "storefront", "redirect_uri": redirect, "scope": "openid",
                  "state": state, "code_challenge": challenge, "code_challenge_method": "S256"}  # fmt: skip
        page = self.client.get(discovery["authorization_endpoint"], params=params, name="sign-in page")
        form = _FormAction()
        form.feed(page.text)
        action = urljoin(page.url, form.action or "")
        login = self.client.post(action, data={"username": username, "password": password}, allow_redirects=False,
                                 name="sign-in")  # fmt: skip
        query = parse_qs(urlsplit(login.headers.get("Location", "")).query)
        if query.get("state") != [state] or "code" not in query:
            raise RuntimeError(f"sign-in as {username} failed: {login.status_code} {login.text[:200]}")
        tokens = self.client.post(
            discovery["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": redirect,
                "client_id": "storefront",
                "code_verifier": verifier,
            },
            name="token",
        ).json()
        self.token = tokens["access_token"]

    def load_products(self) -> None:
        answer = self.call("GET", "/api/products?size=100", "/api/products")
        self.products = answer.json()["items"] if answer.ok else []


class Shopper(Visitor):
    weight = 10
    wait_time = between(1, 3)

    def on_start(self) -> None:
        self.credentials = random.choice(_credentials("LOAD_USERS", "jane,john"))
        self.cart: dict[str, int] = {}
        self.orders: list[str] = []
        self.load_products()

    @task(6)
    def browse(self) -> None:
        page = random.randint(0, 2)
        sort = random.choice(["name", "-name", "price", "-price"])
        self.call("GET", f"/api/products?page={page}&size=12&sort={sort}", "/api/products")

    @task(3)
    def search(self) -> None:
        self.call("GET", f"/api/products?q={random.choice(WORDS)}&size=12", "/api/products?q=")

    @task(5)
    def view(self) -> None:
        if not self.products:
            return self.load_products()
        sku = random.choice(self.products)["sku"]
        self.call("GET", f"/api/products/{sku}", "/api/products/{sku}")
        level = self.call("GET", f"/api/inventory/{sku}", "/api/inventory/{sku}")
        if level.ok and level.json()["available"] > 0 and random.random() < 0.4:
            self.cart[sku] = min(2, self.cart.get(sku, 0) + 1)  # add to cart: the browser keeps it

    @task(2)
    def order(self) -> None:
        if not self.cart:
            return
        if self.token is None:
            self.sign_in(*self.credentials)
        body = {"items": [{"skuCode": s, "quantity": q} for s, q in self.cart.items()],
                "contact": {"email": f"{self.credentials[0]}@example.com"}, "shippingAddress": ADDRESS}  # fmt: skip
        placed = self.call("POST", "/api/orders", "/api/orders (place)", json=body,
                           headers={"Idempotency-Key": str(uuid.uuid4())})  # fmt: skip
        self.cart = {}
        if placed.status_code == 201:
            self.orders.append(placed.json()["orderNumber"])

    @task(1)
    def history(self) -> None:
        if self.token is None:
            self.sign_in(*self.credentials)
        self.call("GET", "/api/orders?size=10", "/api/orders (list)")

    @task(1)
    def cancel(self) -> None:
        if not self.orders or random.random() > 0.3:
            return
        number = self.orders.pop(random.randrange(len(self.orders)))
        if self.token is None:
            self.sign_in(*self.credentials)
        self.call("POST", f"/api/orders/{number}/cancel", "/api/orders/{number}/cancel", json={"reason": "load test"})


class Admin(Visitor):
    """Keeps the shelves full: tops up whatever is low, and now and then a random product."""

    weight = 1
    fixed_count = 1
    wait_time = between(4, 8)

    def on_start(self) -> None:
        self.credentials = _credentials("LOAD_ADMIN", "admin")[0]
        self.sign_in(*self.credentials)
        self.load_products()

    @task
    def restock(self) -> None:
        if self.token is None:
            self.sign_in(*self.credentials)
        low = self.call("GET", "/api/inventory?lowStock=true&size=20", "/api/inventory?lowStock=true")
        skus = [level["skuCode"] for level in low.json()["items"]] if low.ok else []
        if not skus and self.products:
            skus = [random.choice(self.products)["sku"]]
        for sku in skus[:5]:
            body = {"quantity": 20, "mode": "add"}
            self.call("PUT", f"/api/inventory/{sku}", "/api/inventory/{sku} (restock)", json=body)
