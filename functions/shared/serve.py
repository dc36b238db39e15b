"""Serves one functions-framework target: the container's and the local runtime's command.

It is `functions-framework --target ... --source ...` on a faster server. Granian (HTTP in Rust,
the WSGI app on a pool of threads) answers a trivial function with about a third of gunicorn's
CPU per request (0.23 ms against 0.60 ms measured here), and every request of the shop crosses
several functions. `WSGI_SERVER=gunicorn` serves with gunicorn's threads instead, as before (no
control socket: gunicorn 27 would put one per process under $HOME, where several functions
collide and a read-only home fails). Either way the thread count follows the Knative
containerConcurrency (THREADS).
"""

from __future__ import annotations

import sys
from typing import Any

from functions.shared.config import Config, config


def application() -> Any:
    """The WSGI app of FUNCTION_TARGET: what granian's worker loads (a factory, so nothing is imported
    before the worker needs it)."""
    import functions_framework

    settings = config()
    return functions_framework.create_app(
        settings.optional("FUNCTION_TARGET", ""),
        settings.optional("FUNCTION_SOURCE", "main.py"),
        settings.optional("FUNCTION_SIGNATURE_TYPE", "http"),
    )


def _granian(settings: Config) -> None:
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.common import AbstractServer
    from granian.server.mt import MTServer

    class InProcessServer(MTServer):
        """Granian's server whose workers are threads of its own process (made for free-threaded
        Python), used with one worker on this GIL build: the function is one process, not a
        granian parent plus a worker process (about 7 to 11 MB more per function, measured)."""

        def _check_gil(self) -> None:
            """One worker thread needs no free-threading: the GIL is fine."""

        def serve(self, *args: Any, **kwargs: Any) -> None:
            AbstractServer.serve(self, *args, **kwargs)  # without MTServer's "experimental" warning

    threads = settings.integer("THREADS", 8)
    InProcessServer(
        "functions.shared.serve:application",
        factory=True,
        address=settings.optional("HOST", "0.0.0.0"),
        port=settings.integer("PORT", 8080),
        interface=Interfaces.WSGI,
        workers=1,
        # As many requests in the app at once as containerConcurrency lets in; more wait their turn
        # (a lower `backpressure` than the default stalls them instead: measured, 16 of 100 timed out).
        blocking_threads=threads,
        runtime_threads=1,
        log_level=LogLevels(settings.optional("SERVER_LOG_LEVEL", "warning")),
    ).serve()


def _gunicorn(settings: Config) -> None:
    import gunicorn.app.base

    class FunctionServer(gunicorn.app.base.BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"{settings.optional('HOST', '0.0.0.0')}:{settings.optional('PORT', '8080')}",
                "workers": 1,
                "threads": settings.integer("THREADS", 8),
                "timeout": 0,
                "graceful_timeout": 10,
                "keepalive": 30,
                "loglevel": settings.optional("SERVER_LOG_LEVEL", "warning"),
                "control_socket_disable": True,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return application()

    FunctionServer().run()


def main() -> None:
    settings = config()
    if not settings.optional("FUNCTION_TARGET", ""):
        sys.exit("missing required setting FUNCTION_TARGET: the function to serve")
    server = settings.optional("WSGI_SERVER", "granian")
    if server not in ("granian", "gunicorn"):
        sys.exit(f"setting WSGI_SERVER must be granian or gunicorn, got {server!r}")
    (_granian if server == "granian" else _gunicorn)(settings)


if __name__ == "__main__":
    main()
