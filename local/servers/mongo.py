"""SecantusDB, the MongoDB wire protocol server from PyPI, as a single-node replica set."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pymongo
import pymongo.errors

from local.servers.process import HOST, ServerProcess


class EmbeddedMongo(ServerProcess):
    """SecantusDB (MongoDB wire protocol), a single-node replica set "secantus"."""

    name = "mongo"

    def __init__(
        self,
        data_dir: Path | None,
        port: int | None = None,
        log_dir: Path | None = None,
    ) -> None:
        super().__init__(port, log_dir)
        self.data_dir = data_dir
        self.uri = f"mongodb://{HOST}:{self.port}/?directConnection=true"
        self._config = self.log_dir / "secantusd.toml"

    def _prepare(self) -> None:
        # A config file of our own stops secantusd from picking up ./secantusd.toml or
        # ~/.secantus/secantusd.toml, which could turn on auth or TLS behind our back.
        self._config.write_text("# Empty on purpose: every setting is given on the command line.\n")

    def _command(self) -> list[str]:
        executable = shutil.which("secantusd-py", path=str(Path(sys.executable).parent)) or shutil.which("secantusd-py")
        if executable is None:
            raise RuntimeError("secantusd-py is neither next to the Python interpreter nor on PATH; install SecantusDB")
        return [
            executable,
            "--config", str(self._config),
            "--host", HOST,
            "--port", str(self.port),
            "--storage-path", str(self.data_dir or ":memory:"),
        ] + (
            # Without it, writes acknowledged in the last moments before a SIGKILL are lost
            # (measured: 13 of 200 inserts); with it, none, for about 1.5x the cost of a write.
            ["--sync-on-commit"] if self.data_dir else []
        )  # fmt: skip

    def _ready(self) -> bool:
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            self.uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250
        )
        try:
            client.admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            return False
        finally:
            client.close()
