"""The admin console in a real browser: a product created, edited, deactivated; stock set among existing products;
a dead letter made by a fault flag inspected and replayed once the flag is off."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.conftest import eventually
from tests.e2e.browser.conftest import product, sign_in
from tests.e2e.conftest import Shop

pytestmark = pytest.mark.slow


@pytest.fixture
def flags_reset(shop: Shop) -> Iterator[None]:
    yield
    requests.post(f"{shop.stack.url}/_local/flags/reset", timeout=10)


def test_an_admin_creates_edits_deactivates_and_restocks(shop: Shop, new_page: Callable[..., Any], marker: str) -> None:
    page = new_page()
    page.goto("/")
    sign_in(page, "admin")
    page.get_by_role("link", name="Admin").click()
    expect(page).to_have_title("Products · Admin · Shop")

    form = page.locator("#product-form")
    form.get_by_label("SKU").fill(f"lamp_{marker}")
    form.get_by_label("Name").fill(f"Desk lamp {marker}")
    form.get_by_label("Description").fill("Warm light")
    form.get_by_label("Category").fill("home")
    form.get_by_label("Price").fill("45.50")
    form.get_by_label("Picture").fill("/storefront/images/products/magsafe_charger.svg")
    form.get_by_role("button", name="Create product").click()
    expect(page.locator("#notice")).to_contain_text(f"Created Desk lamp {marker}")

    page.get_by_label("Find products").fill(marker)
    page.get_by_role("button", name="Find", exact=True).click()
    row = page.locator(f'#admin-product-rows tr[data-sku="lamp_{marker}"]')
    expect(row).to_contain_text("Active")
    row.get_by_role("button", name=f"Edit Desk lamp {marker}").click()
    expect(form.get_by_label("Name")).to_have_value(f"Desk lamp {marker}")
    form.get_by_label("Price").fill("39.90")
    form.get_by_role("button", name="Save changes").click()
    expect(page.locator("#notice")).to_contain_text(f"Saved Desk lamp {marker}")
    expect(row).to_contain_text("$39.90")

    row.get_by_role("button", name=f"Deactivate Desk lamp {marker}").click()
    expect(row).to_contain_text("Inactive")
    shopper = new_page()
    shopper.goto(f"/#/catalog?q={marker}")
    expect(shopper.locator("#catalog-summary")).to_have_text("No products match.")

    # Stock: the product is chosen from the catalog, never typed.
    page.get_by_role("link", name="Stock").click()
    page.get_by_label("Find a product").fill(marker)
    picker = page.get_by_role("combobox", name="Product", exact=True)
    expect(picker.locator("option", has_text=f"Desk lamp {marker}")).to_have_count(1)
    picker.select_option(f"lamp_{marker}")
    restock = page.locator("#restock-form")
    restock.get_by_label("Quantity").fill("7")
    restock.get_by_label("Low-stock threshold").fill("10")
    page.get_by_role("button", name="Update stock").click()
    expect(page.locator("#notice")).to_contain_text(f"Desk lamp {marker}: 7 available")
    low = page.locator(f'#low-stock-rows tr[data-sku="lamp_{marker}"]')
    expect(low).to_contain_text("7")
    assert shop.available(f"lamp_{marker}") == 7


def test_a_dead_letter_made_by_a_fault_flag_is_replayed(
    shop: Shop, new_page: Callable[..., Any], marker: str, flags_reset: None
) -> None:
    sku = product(shop, f"Speaker {marker}", "audio", 120, 5, "bose_qc_ultra")
    page = new_page()
    page.goto("/")
    sign_in(page, "admin")
    page.goto("/#/admin/flags")
    page.get_by_label("Variant").nth(_flag_index(page, "notificationSendFailure")).select_option("on")
    expect(page.locator("#notice")).to_contain_text("notificationSendFailure is now on")
    page.wait_for_timeout(2000)  # the running notification-send reads the flags file again (every 500 ms)

    placed = shop.order(shop.people.customer(f"dl-{marker}"), (sku, 1))
    assert placed.status_code == 201, placed.text
    number = placed.json()["orderNumber"]

    page.get_by_role("link", name="Event flow").click()
    flow = page.locator("#event-rows tr", has_text=number).filter(has_text="order.placed")
    expect(flow).to_contain_text("dead-lettered", timeout=30_000)
    expect(flow).to_contain_text("inventory-confirm: delivered")

    page.get_by_role("link", name="Dead letters").click()
    row = page.locator("#dead-letter-rows tr", has_text=number)
    expect(row).to_contain_text("422")
    expect(row).to_contain_text("notification-send")
    row.get_by_role("button", name=re.compile("^Inspect dead letter")).click()
    detail = page.locator("#dl-detail")
    expect(detail).to_contain_text("notificationSendFailure")
    expect(detail).to_contain_text(number)

    page.get_by_role("link", name="Fault flags").click()
    page.get_by_role("button", name="Turn every flag off").click()
    expect(page.locator("#notice")).to_contain_text("Every fault flag is off")
    page.wait_for_timeout(2000)
    page.get_by_role("link", name="Dead letters").click()
    page.locator("#dead-letter-rows tr", has_text=number).get_by_role("button").click()
    page.get_by_role("button", name="Replay").click()
    expect(page.locator("#notice")).to_contain_text("was delivered again to notification-send")
    expect(page.locator("#dl-facts")).to_contain_text("answered 200")
    assert len(eventually(lambda: shop.mails_about(number))) == 1


def _flag_index(page: Any, key: str) -> int:
    page.locator("#flag-list li").first.wait_for()
    keys = page.locator("#flag-list code").all_inner_texts()
    return int(keys.index(key))
