"""The HTTP server under the apps: uvicorn (httptools, uvloop) with a deadline on reading a request.

uvicorn bounds the idle time between requests (its keep-alive timeout) but not the time a client
takes to send one: a client that sends its headers a byte at a time holds its connection and its
memory for as long as it likes. :class:`ReadDeadlineProtocol` gives every request a deadline,
from its first byte (or the connection's opening) to its last body byte. A client that misses it
gets ``408 Request Timeout`` (or, once its headers were read and the app is running, a closed
connection, which the app sees as a disconnect), and the connection is closed.
"""

from __future__ import annotations

import asyncio
import resource
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TIMEOUT_BODY = b"request not received in time\n"
_REQUEST_TIMEOUT = b"".join([
    b"HTTP/1.1 408 Request Timeout\r\n",
    b"content-type: text/plain; charset=utf-8\r\n",
    b"content-length: ", str(len(_TIMEOUT_BODY)).encode(), b"\r\n",
    b"connection: close\r\n\r\n", _TIMEOUT_BODY,
])


class ReadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with :attr:`read_timeout` seconds to receive each request.

    The deadline is armed when the connection opens and whenever bytes arrive with none armed
    (a new request, or stray bytes between requests), and disarmed when a request's body is
    complete. Between requests uvicorn's own keep-alive timeout applies.
    """

    read_timeout: float = 15.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_deadline: asyncio.TimerHandle | None = None
        self._headers_read = False
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._arm()
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._headers_read = False
        self._arm()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._headers_read = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        answering = self.cycle is not None and not self.cycle.response_complete
        if not self._headers_read and not answering:
            self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()


def protocol_with_deadline(seconds: float) -> type[ReadDeadlineProtocol]:
    """A :class:`ReadDeadlineProtocol` class whose requests must arrive within ``seconds``."""
    return type("ReadDeadlineProtocol", (ReadDeadlineProtocol,), {"read_timeout": seconds})


def server_config(app: Any, *, host: str, port: int, read_timeout: float,
                  **options: Any) -> uvicorn.Config:
    """The uvicorn configuration every Skewless app runs with (``options`` are uvicorn's)."""
    options.setdefault("access_log", False)
    return uvicorn.Config(app, host=host, port=port, loop="uvloop",
                          http=protocol_with_deadline(read_timeout), **options)


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit (each connection is a file).

    Returns the limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft


def run_server(app: Any, *, host: str, port: int, read_timeout: float, **options: Any) -> None:
    """Serve ``app`` in this process until SIGTERM/SIGINT; exit 3 if it fails to start."""
    raise_open_file_limit()  # every client connection is an open file
    server = uvicorn.Server(server_config(app, host=host, port=port, read_timeout=read_timeout,
                                          **options))
    server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's own exit status for a failed start-up
