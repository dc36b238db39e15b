"""The embedded servers the local runtime and the tests start: PostgreSQL, MongoDB, Kafka, SMTP, a collector.

Each is a supervised child process (process.py): reaped at once when it dies and, once
`supervise()`d, restarted on the same port and data with the kubelet's backoff.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local.servers.collector import EmbeddedCollector
    from local.servers.kafka import EmbeddedKafka
    from local.servers.mongo import EmbeddedMongo
    from local.servers.postgres import POSTGRES_SYSTEM_USER, EmbeddedPostgres
    from local.servers.process import HOST, ServerProcess, die_with_parent, free_port
    from local.servers.smtp import EmbeddedSmtp

# Imported when first used (PEP 562): the SMTP server runs as `python -m local.servers.smtpd`,
# which imports this package first, and needs none of the others' client libraries (psycopg,
# pymongo: 400 ms and about 25 MB for a process that only speaks SMTP).
_WHERE = {
    "HOST": "process",
    "POSTGRES_SYSTEM_USER": "postgres",
    "EmbeddedCollector": "collector",
    "EmbeddedKafka": "kafka",
    "EmbeddedMongo": "mongo",
    "EmbeddedPostgres": "postgres",
    "EmbeddedSmtp": "smtp",
    "ServerProcess": "process",
    "die_with_parent": "process",
    "free_port": "process",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"local.servers.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "HOST",
    "POSTGRES_SYSTEM_USER",
    "EmbeddedCollector",
    "EmbeddedKafka",
    "EmbeddedMongo",
    "EmbeddedPostgres",
    "EmbeddedSmtp",
    "ServerProcess",
    "die_with_parent",
    "free_port",
]
