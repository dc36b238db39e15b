"""Demo catalog, pictures and stock, loaded on a first start through the service functions the API uses."""

from __future__ import annotations

from decimal import Decimal

from functions.catalog import service as catalog
from functions.catalog.bootstrap import now
from functions.catalog.model import CreateProduct
from functions.catalog.store import MongoProductStore
from functions.inventory import service as inventory
from functions.inventory.model import Restock
from functions.inventory.store import PostgresInventoryStore
from functions.shared import mongo

# The demo products' pictures, drawn for this project (gateway/storefront/images/products/<sku>.svg).
IMAGES = "/storefront/images/products"
# Each row: SKU, name, category, price, units in stock, description.
PRODUCTS: tuple[tuple[str, str, str, str, int, str], ...] = (
    ("iphone_15", "iPhone 15", "phones", "799.00", 100, "Apple iPhone 15, 128 GB, A16 Bionic, 48 MP camera"),
    ("pixel_8", "Pixel 8", "phones", "699.00", 100, "Google Pixel 8, 128 GB, Tensor G3, seven years of updates"),
    ("galaxy_24", "Galaxy S24", "phones", "859.99", 100, "Samsung Galaxy S24, 256 GB, Snapdragon 8 Gen 3"),
    ("oneplus_12", "OnePlus 12", "phones", "799.99", 100, "OnePlus 12, 256 GB, 80 W charging"),
    ("iphone_15_pro", "iPhone 15 Pro", "phones", "999.00", 40, "Apple iPhone 15 Pro, titanium, 128 GB"),
    ("pixel_8a", "Pixel 8a", "phones", "499.00", 60, "Google Pixel 8a, 128 GB"),
    ("macbook_air_13", "MacBook Air 13", "laptops", "1099.00", 25, "Apple MacBook Air 13-inch, M3, 8 GB, 256 GB SSD"),
    (
        "thinkpad_x1",
        "ThinkPad X1 Carbon",
        "laptops",
        "1649.00",
        15,
        "Lenovo ThinkPad X1 Carbon Gen 12, 16 GB, 512 GB SSD",
    ),
    ("xps_13", "XPS 13", "laptops", "1299.99", 20, "Dell XPS 13, Core Ultra 7, 16 GB, 512 GB SSD"),
    ("framework_13", "Framework Laptop 13", "laptops", "1049.00", 12, "Framework Laptop 13, repairable, Ryzen 7"),
    ("airpods_pro_2", "AirPods Pro 2", "audio", "249.00", 80, "Apple AirPods Pro (2nd gen), USB-C, noise cancelling"),
    ("sony_wh1000xm5", "Sony WH-1000XM5", "audio", "399.99", 30, "Over-ear wireless headphones, noise cancelling"),
    ("bose_qc_ultra", "Bose QuietComfort Ultra", "audio", "429.00", 20, "Bose QuietComfort Ultra headphones"),
    ("pixel_buds_pro", "Pixel Buds Pro", "audio", "199.00", 50, "Google Pixel Buds Pro, noise cancelling"),
    ("apple_watch_9", "Apple Watch Series 9", "wearables", "399.00", 35, "Apple Watch Series 9, 41 mm, GPS"),
    ("galaxy_watch_6", "Galaxy Watch6", "wearables", "299.99", 30, "Samsung Galaxy Watch6, 40 mm, Bluetooth"),
    ("pixel_watch_2", "Pixel Watch 2", "wearables", "349.00", 25, "Google Pixel Watch 2, Fitbit inside"),
    ("garmin_fenix_7", "Garmin fenix 7", "wearables", "649.99", 10, "Multisport GPS watch, solar"),
    ("usb_c_charger_65w", "65 W USB-C charger", "accessories", "39.99", 200, "GaN charger, two USB-C ports"),
    ("magsafe_charger", "MagSafe Charger", "accessories", "39.00", 150, "Apple MagSafe charger, 1 m"),
    ("usb_c_cable_2m", "USB-C cable 2 m", "accessories", "14.99", 300, "Braided USB-C to USB-C cable, 100 W"),
    ("phone_case_clear", "Clear phone case", "accessories", "19.99", 250, "Clear case for current flagship phones"),
    ("screen_protector", "Glass screen protector", "accessories", "9.99", 400, "Tempered glass, pack of two"),
    ("power_bank_10k", "Power bank 10,000 mAh", "accessories", "29.99", 120, "Slim power bank, USB-C in and out"),
)


def seed_if_empty(mongodb_uri: str, inventory_url: str) -> int:
    """Loads the demo data unless the catalog already has products; returns how many it added."""
    products = MongoProductStore(mongo.client(mongodb_uri))
    if products.products.estimated_document_count() > 0:
        return 0
    stock = PostgresInventoryStore(inventory_url)
    for sku, name, category, price, units, description in PRODUCTS:
        cmd = CreateProduct(
            sku=sku,
            name=name,
            category=category,
            price=Decimal(price),
            description=description,
            image=f"{IMAGES}/{sku}.svg",
        )
        catalog.create_product(cmd, products=products, clock=now, after_commit=lambda: None)
        inventory.restock(Restock(sku, units, "set"), inventory=stock)
    return len(PRODUCTS)
