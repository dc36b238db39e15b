"""Connections to PostgreSQL: a pool per database URL, opened on first use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

_lock = threading.Lock()
# Connections whose rows are dicts (column name -> value).
Connection = psycopg.Connection[DictRow]
_pools: dict[str, ConnectionPool[Connection]] = {}


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


def close_all() -> None:
    """Closes every pool (tests and shutdown)."""
    with _lock:
        for p in _pools.values():
            p.close()
        _pools.clear()


def apply_schema(url: str, *schema_files: Path) -> None:
    """Runs schema files (idempotent DDL) in one transaction: `task migrate` and the local runtime."""
    with psycopg.connect(url, autocommit=False) as conn:
        for path in schema_files:
            conn.execute(path.read_text().encode())
        conn.commit()
