"""Keep-alive HTTP/1.1 connections for calls to other services, shared by a process's threads.

http.client with a small pool of idle connections per host: a call between functions costs
about half the CPU it cost through urllib3's PoolManager, whose request path (URL parsing,
header dictionaries, retry and redirect bookkeeping we turn off anyway) is most of the work
when the answer is a few hundred bytes from the next process.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

IDLE_PER_HOST = 32


class TransportError(Exception):
    """No HTTP answer: the connection could not be made, broke, or what came back was not HTTP."""


class TransportTimeout(TransportError):
    """No answer within the time allowed."""


Answer = tuple[int, dict[str, str], bytes]
Address = tuple[str, str, int]


class KeepAlivePool:
    """Idle connections by (scheme, host, port); a connection is used by one request at a time."""

    def __init__(self, idle_per_host: int = IDLE_PER_HOST) -> None:
        self.idle_per_host = idle_per_host
        self._idle: dict[Address, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def request(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float) -> Answer:
        """One exchange within `timeout` seconds: (status, headers, body). A connection the answer
        leaves open goes back to the pool; any failure closes it and raises TransportError."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"cannot call {url!r}: not an http(s) URL")
        address = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        deadline = time.monotonic() + timeout
        connection = self._take(address) or _connect(address, timeout)
        try:
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            connection.request(method, target, body=body, headers=dict(headers))
            response = connection.getresponse()
            if connection.sock is not None:
                connection.sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = response.read()
        except TimeoutError as error:
            connection.close()
            raise TransportTimeout(f"no answer from {parts.netloc} within {timeout:g}s") from error
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise TransportError(f"{type(error).__name__}: {error}") from error
        if response.will_close:
            connection.close()
        else:
            self._give(address, connection)
        answer_headers: dict[str, str] = {}
        for name, value in response.getheaders():
            answer_headers[name] = f"{answer_headers[name]}, {value}" if name in answer_headers else value
        return response.status, answer_headers, data

    def _take(self, address: Address) -> http.client.HTTPConnection | None:
        """An idle connection the other end has not closed meanwhile (it would read as ready)."""
        while True:
            with self._lock:
                idle = self._idle.get(address)
                if not idle:
                    return None
                connection = idle.pop()
            if _still_open(connection):
                return connection
            connection.close()

    def _give(self, address: Address, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(address, [])
            if len(idle) < self.idle_per_host:
                idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection can carry a request: nothing to read on it (a closed one reads
    as end of file; anything else would be bytes no request asked for)."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        sock.settimeout(0)  # a socket with a timeout would wait for data; the caller sets its own again
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True  # nothing to read: open and quiet
    except OSError:
        return False
    return False


def _connect(address: Address, timeout: float) -> http.client.HTTPConnection:
    scheme, host, port = address
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout)
    return http.client.HTTPConnection(host, port, timeout=timeout)
