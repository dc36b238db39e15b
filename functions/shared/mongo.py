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
            _clients[uri] = pymongo.MongoClient(
                uri, tz_aware=True, serverSelectionTimeoutMS=5000, connectTimeoutMS=3000
            )
        return _clients[uri]
