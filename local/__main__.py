"""`python -m local start|reset`: the shop on this machine, from the manifests, on embedded servers."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from local.manifests import ROOT

if TYPE_CHECKING:
    from local.stack import Stack

DATA_DIR = ROOT / ".local"
LOCK_FILE = "running.lock"


@contextlib.contextmanager
def data_folder_lock(data_dir: Path, doing: str) -> Iterator[None]:
    """Holds the data folder for one start (or reset) at a time; the OS drops the lock if we die."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            sys.exit(f"cannot {doing}: the shop is running on {data_dir} ({holder}); stop it first (Ctrl-C)")
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        yield


def start(args: argparse.Namespace) -> None:
    with data_folder_lock(args.data_dir, "start"):
        _start(args)


def _start(args: argparse.Namespace) -> None:
    from local.seed import seed_if_empty
    from local.stack import Stack, StackSettings

    environ = dict(os.environ)
    stack = Stack(StackSettings(data_dir=args.data_dir, port=args.port, environ=environ, traces=args.traces))
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        stack.start()
        added = seed_if_empty(stack.mongodb_uri, stack.database_urls["inventory"])
        print(banner(stack, added), flush=True)
        if stack.collector is not None or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            where = stack.collector.log_path if stack.collector else environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
            print(f"  traces         spans of every function and of the runtime go to {where}\n", flush=True)
        stopping.wait()
        print("\nstopping ...", flush=True)
    finally:
        stack.stop()


def banner(stack: Stack, seeded: int) -> str:
    issuer = stack.config_map_values()[("shop-config", "oidc.issuer")]
    lines = [
        "",
        "The shop is running. Ctrl-C stops everything.",
        "",
        f"  storefront     {stack.url}/        admin console {stack.url}/#/admin (sign in as admin)",
        f"  API            {stack.url}/api/products      (the gateway; OpenAPI at {stack.url}/openapi.json)",
        f"  sign in        {issuer}",
        "                 demo users: jane / jane-password and john / john-password (customers),",
        "                             admin / admin-password (admin)",
        f"  a token        curl -d grant_type=password -d client_id=storefront -d username=jane "
        f"-d password=jane-password {issuer}/protocol/openid-connect/token",
        f"  one function   curl -H 'Host: product-list.shop.svc.cluster.local' {stack.url}/api/products",
        f"                 curl {stack.url}/ksvc/product-list/api/products",
        f"  status         {stack.url}/_local/services   {stack.url}/_local/eventing",
        f"  fault flags    {stack.url}/_local/flags   event flow {stack.url}/_local/events",
        f"  mail           {stack.url}/_local/mail   (files in {stack.data_dir / 'mail'})"
        if stack.smtp
        else f"  mail           sent to {stack.smtp_url}",
        f"  data           {stack.data_dir}  ({f'seeded {seeded} demo products' if seeded else 'existing data'})",
        f"  logs           {stack.log_dir}",
        "",
        f"  PostgreSQL     {stack.database_urls.get('inventory', '').rsplit('/', 1)[0]}/<domain>",
        f"  MongoDB        {stack.mongodb_uri}",
        f"  Kafka          {stack.kafka_bootstrap}",
        f"  SMTP           {stack.smtp_url}",
        "",
        "  services       " + ", ".join(sorted(stack.services)),
        "",
    ]
    return "\n".join(lines)


def token(args: argparse.Namespace) -> None:
    """Prints an identity header as the gateway would forward it, signed with the local secret."""
    from functions.shared import identity

    secret_file = args.data_dir / "identity-secret"
    if not secret_file.exists():
        sys.exit(f"no {secret_file}: start the shop once first (./taskw start)")
    roles = {"admin": {"admin", "customer"}, "customer": {"customer"}}[args.role]
    who = identity.Identity(
        args.subject or f"local-{args.role}",
        args.email or f"{args.role}@example.com",
        "Local",
        args.role.title(),
        frozenset(roles),
    )
    print(f"{identity.HEADER}: {identity.sign(who, secret_file.read_text().strip(), ttl_seconds=args.ttl)}")


def reset(args: argparse.Namespace) -> None:
    if not args.data_dir.exists():
        print(f"nothing to remove at {args.data_dir}")
        return
    with data_folder_lock(args.data_dir, "reset"):
        shutil.rmtree(args.data_dir)
    print(f"removed {args.data_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where data and logs live (default .local/)")
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("start", help="start the whole shop (Ctrl-C stops it)")
    start_parser.add_argument("--port", type=int, default=8080, help="ingress port (default 8080)")
    start_parser.add_argument(
        "--traces",
        action="store_true",
        help="run a local OpenTelemetry collector (rotel) and trace every request into .local/logs/traces.log",
    )
    commands.add_parser("reset", help="wipe local data (databases, mail, logs)")
    token_parser = commands.add_parser("token", help="print an X-Shop-Identity header for curl")
    token_parser.add_argument("role", choices=["customer", "admin"])
    token_parser.add_argument("--subject", help="user id (default local-<role>)")
    token_parser.add_argument("--email", help="email (default <role>@example.com)")
    token_parser.add_argument("--ttl", type=int, default=3600, help="seconds the header stays valid")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd narrates every SMTP session
    {"start": start, "reset": reset, "token": token}[args.command](args)


if __name__ == "__main__":
    main()
