"""The rotel OpenTelemetry collector from PyPI, for `./taskw start --traces`."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from local.servers.process import HOST, ServerProcess, free_port


class EmbeddedCollector(ServerProcess):
    """The rotel OpenTelemetry collector from PyPI: OTLP in (HTTP and gRPC), spans written to its log.

    With no exporter configured it keeps nothing but what it prints; set ROTEL_EXPORTER and
    ROTEL_OTLP_EXPORTER_ENDPOINT (rotel's own variables) to forward spans to Tempo, Jaeger, ...
    """

    name = "traces"

    def __init__(self, port: int | None = None, log_dir: Path | None = None, *, print_spans: bool = True) -> None:
        super().__init__(port, log_dir)
        self.grpc_port = free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self.print_spans = print_spans

    def _command(self) -> list[str]:
        import rotel

        agent = Path(rotel.__file__).with_name("rotel-agent")
        return [
            str(agent), "start",
            "--otlp-http-endpoint", f"{HOST}:{self.port}",
            "--otlp-grpc-endpoint", f"{HOST}:{self.grpc_port}",
            "--exporter", os.environ.get("ROTEL_EXPORTER", "blackhole"),
            "--debug-log", "traces" if self.print_spans else "none",
            "--debug-log-verbosity", "detailed",
        ]  # fmt: skip

    def _ready(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex((HOST, self.port)) == 0
