"""MongoDB clients: one per URI and process, opened on first use."""

from __future__ import annotations

import threading
from typing import Any

import pymongo

_lock = threading.Lock()
_clients: dict[str, pymongo.MongoClient[Any]] = {}


def client(uri: str) -> pymongo.MongoClient[Any]:
    with _lock:
        if uri not in _clients:
            # While the server restarts, an operation waits this long for it, then fails (a 503 upstream).
            _clients[uri] = pymongo.MongoClient(
                uri, tz_aware=True, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000
            )
        return _clients[uri]
