"""Connections to PostgreSQL (a pool per URL) and MongoDB (a client per URI), opened on first use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pymongo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

_lock = threading.Lock()
# Connections whose rows are dicts (column name -> value).
Connection = psycopg.Connection[DictRow]
_pools: dict[str, ConnectionPool[Connection]] = {}
_mongo: dict[str, pymongo.MongoClient[Any]] = {}


def pool(url: str, max_size: int = 8) -> ConnectionPool[Connection]:
    """One pool per database URL and process; rows come back as dicts."""
    with _lock:
        if url not in _pools:
            _pools[url] = ConnectionPool(
                url,
                connection_class=psycopg.Connection[DictRow],
                min_size=1,
                max_size=max_size,
                kwargs={"row_factory": dict_row, "autocommit": False},
                timeout=5.0,
                name=url.rsplit("/", 1)[-1],
                open=True,
            )
        return _pools[url]


@contextmanager
def transaction(url: str) -> Iterator[Connection]:
    """A connection inside one transaction: committed on success, rolled back on error."""
    with pool(url).connection() as conn, conn.transaction():
        yield conn


def mongo(uri: str) -> pymongo.MongoClient[Any]:
    with _lock:
        if uri not in _mongo:
            _mongo[uri] = pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000, connectTimeoutMS=3000)
        return _mongo[uri]


def close_all() -> None:
    """Closes every pool and client (tests and shutdown)."""
    with _lock:
        for p in _pools.values():
            p.close()
        for client in _mongo.values():
            client.close()
        _pools.clear()
        _mongo.clear()


def apply_schema(url: str, *schema_files: Path) -> None:
    """Runs schema files (idempotent DDL) in one transaction: `task migrate` and the local runtime."""
    with psycopg.connect(url, autocommit=False) as conn:
        for path in schema_files:
            conn.execute(path.read_text().encode())
        conn.commit()
