"""Schema migration at deployment: one PostgreSQL database per area with a schema.sql, plus the catalog's indexes.

Run by `task migrate` against external servers, by the local runtime against the embedded
ones and by the migrate Jobs in a cluster; never at a function's cold start. It knows every
area, so it lives beside them rather than in the shared plumbing they all use.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from functions.catalog.store import MongoProductStore
from functions.shared import db, mongo

FUNCTIONS_DIR = Path(__file__).resolve().parent
SHARED_SCHEMA = FUNCTIONS_DIR / "shared" / "schema.sql"
log = logging.getLogger("shop.migrate")


def domains() -> dict[str, Path]:
    """Domain name -> its schema file: every functions/<domain>/schema.sql."""
    return {path.parent.name: path for path in sorted(FUNCTIONS_DIR.glob("*/schema.sql")) if path != SHARED_SCHEMA}


def database_url(server_url: str, database: str) -> str:
    """The URL of `database` on the server that `server_url` points at."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def migrate_postgres(server_url: str) -> dict[str, str]:
    """Creates each domain database if missing and applies its schema; returns domain -> URL."""
    urls: dict[str, str] = {}
    with psycopg.connect(database_url(server_url, "postgres"), autocommit=True) as admin:
        existing = {row[0] for row in admin.execute("SELECT datname FROM pg_database")}
        for domain in domains():
            if domain not in existing:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(domain)))
                log.info("created database %s", domain)
    for domain, schema in domains().items():
        url = database_url(server_url, domain)
        db.apply_schema(url, SHARED_SCHEMA, schema)
        urls[domain] = url
    return urls


def migrate_mongo(uri: str) -> None:
    MongoProductStore(mongo.client(uri)).ensure_indexes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", help="server URL, e.g. postgresql://user:pw@host:5432/postgres")
    parser.add_argument("--mongodb", help="MongoDB URI of the catalog")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.postgres:
        for domain, url in migrate_postgres(args.postgres).items():
            log.info("migrated %s -> %s", domain, url.split("@")[-1])
    if args.mongodb:
        migrate_mongo(args.mongodb)
        log.info("catalog indexes ensured")
    if not (args.postgres or args.mongodb):
        parser.error("give --postgres and/or --mongodb")


if __name__ == "__main__":
    main()
