"""`unistatus serve` facing clients too slow to finish a request, and too many of them
(api/slow_clients.py): a connection that sent half a request head stayed open for ever;
some thousands of them took every file descriptor, after which the service answered
nobody and asyncio logged "Too many open files" in a loop (found by a probe)."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from support.serving import free_port
from support.slow_statement import start, wait_for

PARTIAL_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\n"
WRITER = "writer-token-0123456789"


@pytest.fixture
def served(sqlite_db: Any) -> Iterator[tuple[int, Any]]:
    """The service as a process: requests within 1 s, at most 4 connections."""
    port = free_port()
    bounds = ("--request-timeout", "1", "--max-connections", "4")
    proc = start(
        sqlite_db.url,
        *("serve", "--port", str(port), "--monitor-interval", "0", *bounds),
        env_extra={"UNISTATUS_WRITER_TOKEN": WRITER},
    )
    try:
        wait_for(proc, lambda: _health(port) == 200, "served /health")
        yield port, proc
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert "Traceback" not in err, err  # a request cut off is no error of the service
    finally:
        proc.kill()
        proc.communicate()


def _health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return int(r.status)
    except OSError:
        return None


def _answer(conn: socket.socket, seconds: float) -> bytes:
    """All the server sends until it closes the connection (or ``seconds`` pass)."""
    conn.settimeout(seconds)
    got = b""
    try:
        while chunk := conn.recv(4096):
            got += chunk
    except TimeoutError:
        return got + b"<still open>"
    except ConnectionResetError:
        return got + b"<reset>"
    return got


def test_a_request_that_never_finishes_is_cut_off(served: tuple[int, Any]) -> None:
    port, _ = served
    head = socket.create_connection(("127.0.0.1", port))
    body = socket.create_connection(("127.0.0.1", port))
    started = time.monotonic()
    head.sendall(PARTIAL_HEAD)
    body.sendall(
        b"POST /api/v1/transactions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + WRITER.encode() + b"\r\n"
        b'content-length: 100\r\n\r\n{"transaction_type"'
    )
    for conn in (head, body):
        with conn:
            said = _answer(conn, 10)
        assert said.startswith(b"HTTP/1.1 408 "), said
        # The JSON error body every refusal has (it was text/plain: a probe).
        head_part, _, text = said.partition(b"\r\n\r\n")
        assert b"content-type: application/json" in head_part.lower(), said
        assert json.loads(text)["error"] == "RequestTimeoutError", said
    assert time.monotonic() - started < 5
    assert _health(port) == 200


def test_a_connection_that_sends_nothing_is_closed_without_a_word(
    served: tuple[int, Any],
) -> None:
    """A 408 there is read by a client that reuses the connection as the answer to its
    next request (found by a review)."""
    port, _ = served
    with socket.create_connection(("127.0.0.1", port)) as idle:
        started = time.monotonic()
        said = _answer(idle, 10)
    assert said in (b"", b"<reset>"), said
    assert time.monotonic() - started < 5


def test_a_trickle_does_not_extend_the_deadline(served: tuple[int, Any]) -> None:
    port, _ = served
    with socket.create_connection(("127.0.0.1", port)) as conn:
        started = time.monotonic()
        conn.settimeout(0.3)
        said = b""
        for byte in PARTIAL_HEAD:  # one byte every 0.3 s: 9 s in all
            try:
                conn.sendall(bytes([byte]))
                said += conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if said:
                break
    assert said.startswith(b"HTTP/1.1 408 "), said
    assert time.monotonic() - started < 3


def test_a_connection_beyond_the_limit_is_closed_and_the_service_recovers(
    served: tuple[int, Any],
) -> None:
    port, proc = served
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port)) as beyond:
            beyond.sendall(PARTIAL_HEAD + b"\r\n")
            said = _answer(beyond, 5)
        assert said in (b"", b"<reset>"), said
    finally:
        for conn in idle:
            conn.close()
    # The idle ones closed, a request is served again.
    wait_for(proc, lambda: _health(port) == 200, "served /health again")


def test_an_answer_is_never_cut_short(served: tuple[int, Any]) -> None:
    """A request that has arrived is answered however long it keeps the connection:
    the keep-alive connection serves a second request after the deadline."""
    port, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(2):
            conn.request("GET", "/api/v1/status")
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 200
            time.sleep(0.5)
    finally:
        conn.close()
