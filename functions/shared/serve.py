"""Serves one functions-framework target under gunicorn: the container's and the local runtime's command.

It is `functions-framework --target ... --source ...` with two gunicorn settings the
CLI cannot pass: no control socket (gunicorn 27 would put one per process under
$HOME, where several functions collide and a read-only home fails), and a thread
count that follows the Knative containerConcurrency.
"""

from __future__ import annotations

import sys
from typing import Any

import functions_framework
import gunicorn.app.base

from functions.shared.config import config


class FunctionServer(gunicorn.app.base.BaseApplication):
    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self.app = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.app


def main() -> None:
    settings = config()
    target = settings.optional("FUNCTION_TARGET", "")
    if not target:
        sys.exit("missing required setting FUNCTION_TARGET: the function to serve")
    source = settings.optional("FUNCTION_SOURCE", "main.py")
    signature = settings.optional("FUNCTION_SIGNATURE_TYPE", "http")
    app = functions_framework.create_app(target, source, signature)
    options = {
        "bind": f"{settings.optional('HOST', '0.0.0.0')}:{settings.optional('PORT', '8080')}",
        "workers": 1,
        "threads": settings.integer("THREADS", 8),
        "timeout": 0,
        "graceful_timeout": 10,
        "keepalive": 30,
        "loglevel": settings.optional("GUNICORN_LOG_LEVEL", "warning"),
        "control_socket_disable": True,
    }
    FunctionServer(app, options).run()


if __name__ == "__main__":
    main()
