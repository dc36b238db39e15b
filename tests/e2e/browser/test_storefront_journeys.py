"""A shopper's journeys in a real browser: browse, search and filter; sign in; buy, get the mail, cancel; too much
refused in plain words; another customer's orders unseen; the page at a phone's 390 px."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.conftest import eventually
from tests.e2e.browser.conftest import product, sign_in
from tests.e2e.conftest import Shop

pytestmark = pytest.mark.slow
TIMES = "\u00d7"  # the multiplication sign, as the page writes quantities


def test_anonymous_browse_search_and_filter(shop: Shop, new_page: Callable[..., Any], marker: str) -> None:
    product(shop, f"iPhone {marker}", "phones", 799, 5, "iphone_15")
    product(shop, f"XPS {marker}", "laptops", 1299.99, 5, "xps_13")
    product(shop, f"Galaxy {marker} with a name long enough to need two lines or more on a card", "phones", 859, 5)
    page = new_page()
    page.goto("/")
    expect(page).to_have_title("Catalog · Shop")
    expect(page.locator(".product-card").first).to_be_visible()
    expect(page.locator(".product-card img").first).to_be_visible()

    page.get_by_label("Search").fill(marker)
    page.get_by_role("button", name="Search").click()
    cards = page.locator(".product-card h2")
    expect(cards).to_have_count(3)
    # Sorted by name as people read names: "Galaxy", "iPhone", "XPS", whatever the case.
    expect(cards).to_have_text([re.compile(r"^Galaxy"), f"iPhone {marker}", f"XPS {marker}"])
    expect(page).to_have_title(f"“{marker}” · Catalog · Shop")

    page.locator("#category").select_option(label="Phones")
    expect(cards).to_have_count(2)
    expect(page.locator(".product-card .category").first).to_have_text("Phones")  # as the filter says it
    assert f"q={marker}" in page.url and "category=phones" in page.url
    page.reload()
    expect(cards).to_have_count(2)  # the URL kept search and filter
    expect(page.get_by_label("Search")).to_have_value(marker)
    expect(page.locator("#category")).to_have_value("phones")

    long_name = page.locator(".product-card h2").first
    card = page.locator(".product-card").first
    assert long_name.bounding_box()["width"] <= card.bounding_box()["width"]  # type: ignore[index]
    page.get_by_label("Sort by").select_option(label="Price, high to low")
    expect(cards.first).to_have_text(re.compile(r"^Galaxy"))


def test_sign_in_through_the_real_login_page(shop: Shop, new_page: Callable[..., Any]) -> None:
    page = new_page()
    page.goto("/#/cart")
    page.get_by_role("button", name="Sign in").first.click()
    expect(page.get_by_role("heading", name="Sign in to Shop")).to_be_visible()
    expect(page.get_by_role("link", name="Back to the shop")).to_be_visible()
    page.get_by_label("Username or email").fill("jane")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    page.get_by_label("Password").fill("jane-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.locator(".user-name")).to_have_text("Jane Doe")
    expect(page.locator(".site-header")).not_to_contain_text("offline_access")
    expect(page.locator(".site-header")).not_to_contain_text("default-roles")
    expect(page).to_have_title("Cart · Shop")  # back where the sign-in started
    assert "code=" not in page.url


def test_buy_two_products_get_the_mail_cancel_and_the_stock_comes_back(
    shop: Shop, new_page: Callable[..., Any], marker: str
) -> None:
    phone = product(shop, f"Phone {marker}", "phones", 500, 10)
    product(shop, f"Cable {marker}", "accessories", 10, 50, "usb_c_cable_2m")
    page = new_page()
    page.goto("/")
    sign_in(page, "jane")

    page.goto(f"/#/product/{phone}")
    expect(page.get_by_role("heading", name=f"Phone {marker}")).to_be_visible()
    expect(page.locator("#product-stock")).to_have_text("10 in stock")
    expect(page).to_have_title(f"Phone {marker} · Shop")
    page.locator("#add-quantity").fill("2")
    page.get_by_role("button", name="Add to cart").click()
    expect(page.get_by_role("status")).to_contain_text(f"Added 2 {TIMES} Phone {marker}")
    page.goto(f"/#/catalog?q={marker}")
    page.get_by_role("button", name=f"Add Cable {marker} to the cart").click()
    expect(page.locator("#notice")).to_contain_text(f"Added 1 {TIMES} Cable {marker}")
    expect(page.locator("#notice")).to_be_in_viewport()

    page.get_by_role("link", name=re.compile("^Cart")).click()
    expect(page.locator("#cart-lines tr")).to_have_count(2)
    expect(page.locator("#cart-total")).to_have_text(re.compile(r"1,010\.00"))
    expect(page.get_by_label("Email", exact=True)).to_have_value("jane@example.com")  # from the account
    page.get_by_role("textbox", name="Phone (optional)").fill("+44 20 7946 0000")
    page.get_by_label("Full name").fill("Jane Doe")
    page.get_by_label("Address", exact=True).fill("12 St James's Square")
    page.get_by_label("Postal code").fill("SW1Y 4JH")
    page.get_by_label("City").fill("London")
    page.get_by_label("Country").select_option(label="United Kingdom")
    page.get_by_role("button", name="Place order").click()
    confirmation = page.locator("#order-result")
    expect(confirmation).to_contain_text("is placed")
    number = re.search(r"ORD-[A-Z0-9-]+", confirmation.inner_text()).group(0)  # type: ignore[union-attr]
    expect(page.locator("#cart-count")).to_have_text("0")

    mail = shop.wait_for_mail(number)[0]
    assert mail["To"] == "jane@example.com"
    assert "12 St James's Square" in mail.get_content() and f"Phone {marker}" in mail.get_content()

    page.get_by_role("link", name="See my orders").click()
    order = page.locator(f'[data-order="{number}"]')
    expect(order).to_contain_text("Placed")
    expect(order).to_contain_text("Ship to:")
    expect(order).to_contain_text("SW1Y 4JH London")
    eventually(lambda: shop.available(phone) == 8)
    order.get_by_text("Cancel this order…").click()
    order.get_by_label("Reason (optional)").fill("changed my mind")
    order.get_by_role("button", name="Cancel order").click()
    expect(page.locator(f'[data-order="{number}"]')).to_contain_text("Cancelled")
    expect(page.locator(f'[data-order="{number}"]')).to_contain_text("changed my mind")

    eventually(lambda: shop.available(phone) == 10)
    page.goto(f"/#/product/{phone}")
    expect(page.locator("#product-stock")).to_have_text("10 in stock")


def test_more_than_there_is_is_refused_in_plain_words(shop: Shop, new_page: Callable[..., Any], marker: str) -> None:
    buds = product(shop, f"Buds {marker}", "audio", 199, 2, "pixel_buds_pro")
    page = new_page()
    page.goto("/")
    sign_in(page, "jane")
    page.goto(f"/#/product/{buds}")
    expect(page.locator("#product-stock")).to_have_text("Only 2 left")
    page.locator("#add-quantity").fill("1000")
    page.get_by_role("button", name="Add to cart").click()
    expect(page.locator("#add-quantity-error")).to_have_text("Choose 1 to 2.")
    expect(page.locator("#cart-count")).to_have_text("0")
    page.locator("#add-quantity").fill("2")
    page.get_by_role("button", name="Add to cart").click()
    expect(page.get_by_role("button", name="All available units are in your cart")).to_be_disabled()

    # Meanwhile someone else buys one: the cart asks for more than there is.
    assert shop.order(shop.people.customer(f"other-{marker}"), (buds, 1)).status_code == 201
    page.goto("/#/cart")
    page.get_by_label("Full name").fill("Jane Doe")
    page.get_by_label("Address", exact=True).fill("1 Main Street")
    page.get_by_label("Postal code").fill("10115")
    page.get_by_label("City").fill("Berlin")
    page.get_by_label("Country").select_option("DE")
    page.get_by_role("button", name="Place order").click()
    summary = page.locator("#cart-form .form-error[data-form-error]")
    expect(summary).to_have_text(f"Not enough stock: only 1 {TIMES} Buds {marker} left. Nothing was ordered.")
    expect(page.locator("#cart-quantity-0-error")).to_have_text("Only 1 left.")
    expect(page.locator("#order-result")).to_be_hidden()
    assert buds not in summary.inner_text()
    assert shop.available(buds) == 1


def test_another_customer_cannot_see_the_first_ones_orders(
    shop: Shop, new_page: Callable[..., Any], marker: str
) -> None:
    sku = product(shop, f"Watch {marker}", "wearables", 99, 5, "pixel_watch_2")
    jane = shop.stack.issuer.token_for("jane")["access_token"]
    placed = shop.ingress.session.post(
        f"{shop.stack.url}/api/orders",
        json={"items": [{"skuCode": sku, "quantity": 1}]},
        headers={"Authorization": f"Bearer {jane}"},
        timeout=30,
    )
    assert placed.status_code == 201, placed.text
    number = placed.json()["orderNumber"]

    page = new_page()
    page.goto("/")
    sign_in(page, "john")
    page.get_by_role("link", name="My orders").click()
    expect(page.get_by_role("heading", name="My orders")).to_be_visible()
    expect(page.locator("#orders-empty, #order-list > li").first).to_be_visible()
    expect(page.locator("main")).not_to_contain_text(number)
    expect(page.get_by_role("link", name="Admin")).to_be_hidden()
    page.goto("/#/admin/orders")
    expect(page.locator("#notice")).to_contain_text("admin role")
    expect(page.locator("#view-admin")).to_be_hidden()


def test_the_phone_layout_at_390_px(shop: Shop, new_page: Callable[..., Any], marker: str) -> None:
    name = f"Power bank {marker} with an unusually long and descriptive product name"
    sku = product(shop, name, "accessories", 29.99, 10, "power_bank_10k")
    page = new_page(width=390, height=844)
    page.goto(f"/#/catalog?q={marker}")
    card = page.locator(".product-card").first
    expect(card).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing spills sideways
    assert card.bounding_box()["width"] <= 390  # type: ignore[index]
    page.get_by_role("button", name=re.compile(f"^Add Power bank {marker}")).click()
    expect(page.locator("#notice")).to_be_in_viewport()
    page.goto("/#/cart")
    row = page.locator(f'#cart-lines tr[data-sku="{sku}"]')
    expect(row).to_be_visible()
    labels = row.locator("td[data-label]").evaluate_all(
        "cells => cells.map(cell => getComputedStyle(cell, '::before').content)"
    )
    assert labels == ['"Unit price"', '"Quantity"', '"Line total"']  # each price says what it is
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(_artifact("phone-cart.png")), full_page=True)


def _artifact(name: str) -> Any:
    from tests.e2e.browser.conftest import ARTIFACTS

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
