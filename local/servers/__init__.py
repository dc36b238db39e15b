"""The embedded servers the local runtime and the tests start: PostgreSQL, MongoDB, Kafka, SMTP, a collector.

Each is a supervised child process (process.py): reaped at once when it dies and, once
`supervise()`d, restarted on the same port and data with the kubelet's backoff.
"""

from local.servers.collector import EmbeddedCollector
from local.servers.kafka import EmbeddedKafka
from local.servers.mongo import EmbeddedMongo
from local.servers.postgres import POSTGRES_SYSTEM_USER, EmbeddedPostgres
from local.servers.process import HOST, ServerProcess, die_with_parent, free_port
from local.servers.smtp import EmbeddedSmtp

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
