"""Slow and idle clients against `skewless serve`: many idle connections do not shut others out,
and a client that sends a request slowly loses its connection at the read deadline."""

from __future__ import annotations

import json
import socket
import time
from http import client as http_client

import httpx
import pytest

from service.http_server import raise_open_file_limit
from tests.support.service_harness import ROW, ServeProcess, serve_env

pytestmark = pytest.mark.redis

READ_TIMEOUT = 4.0
IDLE_CONNECTIONS = 1500


@pytest.fixture(scope="module")
def server(demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("slow-clients")
    env = serve_env(demo.settings, feature_log_dir=root / "log",
                    request_read_timeout_seconds=READ_TIMEOUT)
    process = ServeProcess(env, root / "serve.log").start()
    try:
        yield process
    finally:
        process.stop()


def connect(server: ServeProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # data before the deadline would be a protocol error
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


def test_idle_connections_leave_predict_answered_and_are_closed_at_the_deadline(server):
    assert raise_open_file_limit() > IDLE_CONNECTIONS + 100
    opened = time.monotonic()
    idle = [connect(server) for _ in range(IDLE_CONNECTIONS)]
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            response = http.post("/predict", json=ROW)
        # Answered while every idle connection was still held open by the server.
        assert time.monotonic() - opened < READ_TIMEOUT, "too slow to open them in time"
        assert response.status_code == 200, response.text
        assert all(still_open(sock) for sock in idle)
        # Then the deadline closes every one of them, each told why.
        time.sleep(max(0.0, opened + READ_TIMEOUT + 1 - time.monotonic()))
        for sock in idle:
            sock.settimeout(5)
        answers = {read_until_closed(sock).split(b"\r\n", 1)[0] for sock in idle}
        assert answers == {b"HTTP/1.1 408 Request Timeout"}
    finally:
        for sock in idle:
            sock.close()


def test_headers_sent_a_line_at_a_time_are_cut_off_at_the_deadline(server):
    sock = connect(server)
    lines = int(READ_TIMEOUT / 0.1) * 3  # three times what fits in the deadline
    sent = 0
    try:
        sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\n")
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for sent in range(lines):
                sock.sendall(b"x-slow: %d\r\n" % sent)
                if sent % 10 == 0:  # others are served meanwhile
                    assert http.post("/predict", json=ROW).status_code == 200
                time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert sent < lines - 1, "the server let a client take three deadlines over its headers"
    try:
        answer = read_until_closed(sock)
    except ConnectionResetError:  # the client's unread bytes can turn the close into a reset
        answer = b""
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 Request Timeout")
    sock.close()


def test_a_body_that_stops_coming_closes_the_connection_without_an_error_logged(server):
    sock = connect(server)
    sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: 200\r\n\r\n{\"card_id\": ")
    assert read_until_closed(sock) == b""  # the app was reading: it sees a disconnect
    sock.close()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.post("/predict", json=ROW).status_code == 200
    log = server.log_path.read_text()
    assert "Traceback" not in log and "unhandled error" not in log


def test_the_deadline_is_per_request_not_per_connection(server):
    """A keep-alive client sending requests back to back for longer than the deadline."""
    http = http_client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    http.connect()
    local = http.sock.getsockname()
    ended = time.monotonic() + READ_TIMEOUT * 1.5
    try:
        while time.monotonic() < ended:
            http.request("POST", "/predict", body=json.dumps(ROW),
                         headers={"content-type": "application/json"})
            response = http.getresponse()
            response.read()
            assert response.status == 200
            assert http.sock is not None and http.sock.getsockname() == local  # same connection
            time.sleep(0.2)
    finally:
        http.close()
