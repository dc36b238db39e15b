"""The keep-alive pool of function-to-function calls against a real HTTP/1.1 server on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from functions.shared.keepalive import KeepAlivePool, TransportError, TransportTimeout


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.connections.add(self.client_address)
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        answer = self.path.encode() + b" " + body
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("X-Seen", "one")
        self.send_header("X-Seen", "two")
        self.end_headers()
        self.wfile.write(answer)
        # The server ends an idle connection without saying so (as an idle timeout does).
        self.close_connection = self.path.startswith("/then-close")

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    connections: set[tuple[str, int]]


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.connections = set()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url(server: Server, path: str) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}{path}"


def test_calls_one_after_another_share_one_connection(server: Server) -> None:
    pool = KeepAlivePool()
    for n in range(5):
        status, _, body = pool.request("POST", url(server, f"/x?n={n}"), b"hi", {}, 2.0)
        assert (status, body) == (201, f"/x?n={n} hi".encode())
    assert len(server.connections) == 1
    pool.close()


def test_repeated_headers_are_joined_as_one(server: Server) -> None:
    _, headers, _ = KeepAlivePool().request("POST", url(server, "/h"), None, {}, 2.0)
    assert headers["X-Seen"] == "one, two"


def test_a_connection_the_server_closed_while_idle_is_not_used_again(server: Server) -> None:
    pool = KeepAlivePool()
    assert pool.request("POST", url(server, "/then-close"), b"a", {}, 2.0)[0] == 201
    time.sleep(0.2)  # the server's close reaches this side
    status, _, body = pool.request("POST", url(server, "/after"), b"b", {}, 2.0)
    assert (status, body) == (201, b"/after b")
    assert len(server.connections) == 2


def test_threads_get_their_own_answers(server: Server) -> None:
    pool = KeepAlivePool(idle_per_host=4)

    def call(n: int) -> bytes:
        return pool.request("POST", url(server, f"/t{n}"), str(n).encode(), {}, 5.0)[2]

    with ThreadPoolExecutor(16) as workers:
        answers = list(workers.map(call, range(200)))
    assert answers == [f"/t{n} {n}".encode() for n in range(200)]
    assert 1 < len(server.connections) <= 200


def test_no_answer_in_time_is_a_timeout_and_the_connection_is_dropped(server: Server) -> None:
    pool = KeepAlivePool()
    with pytest.raises(TransportTimeout, match=r"within 0\.2s"):
        pool.request("POST", url(server, "/slow"), b"", {}, 0.2)
    assert pool.request("POST", url(server, "/fast"), b"", {}, 2.0)[0] == 201


def test_nothing_listening_is_a_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransportError, match="ConnectionRefusedError"):
        KeepAlivePool().request("GET", f"http://127.0.0.1:{port}/", None, {}, 1.0)


def test_an_address_that_is_not_http_is_refused_before_any_connection() -> None:
    with pytest.raises(TransportError, match="not an http"):
        KeepAlivePool().request("GET", "ftp://127.0.0.1/x", None, {}, 1.0)
