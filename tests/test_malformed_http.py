"""Requests that are not valid HTTP get a problem document too (issue 18, service item 5).

Raw bytes over a socket to ``recsys-server serve`` on 127.0.0.1: these never reach the
app (an HTTP client library would refuse to send most of them)."""

from __future__ import annotations

import contextlib
import json
import socket

import pytest

from shared.process import ServerProcess

HOST = b"Host: 127.0.0.1\r\n"

MALFORMED: dict[str, tuple[bytes, int, str]] = {
    # name: (request, status, words of the parser's reason in the detail)
    "no Host": (b"GET /livez HTTP/1.1\r\n\r\n", 400, "Host"),
    "Content-Length: abc": (
        b"POST /inject_user HTTP/1.1\r\n" + HOST + b"Content-Length: abc\r\n\r\n{}",
        400,
        "Content-Length",
    ),
    "chunked garbage": (
        b"POST /inject_user HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n"
        b"Content-Type: application/json\r\n\r\nzz\r\ngarbage\r\n0\r\n\r\n",
        400,
        "chunk",
    ),
    "a 200 KB header": (
        b"GET /livez HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        431,
        "too long",
    ),
    "not HTTP": (b"HELLO\r\n\r\n", 400, "request line"),
    "Transfer-Encoding: gzip": (
        b"POST /inject_user HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n",
        501,
        "chunked is supported",
    ),
}


def exchange(server: ServerProcess, request: bytes) -> bytes:
    """Send the bytes, read until the server closes (bounded by the socket timeout)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        # the server may answer and close before it read everything
        with contextlib.suppress(OSError):
            sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:  # unread bytes at the server's close: RST after it
            pass
    return answer


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_http_gets_a_problem_document(server: ServerProcess, name: str) -> None:
    request, status, reason = MALFORMED[name]
    code, headers, body = parse(exchange(server, request))
    assert code == status
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    problem = json.loads(body[: int(headers["content-length"])])
    assert problem["status"] == status
    kinds = {400: "malformed-request", 431: "headers-too-large", 501: "not-implemented"}
    assert problem["type"] == kinds[status]
    assert reason.lower() in problem["detail"].lower(), problem["detail"]


def test_the_server_answers_normally_after_malformed_requests(server: ServerProcess) -> None:
    for request, _, _ in MALFORMED.values():
        exchange(server, request)
    code, _, body = parse(exchange(server, b"GET /livez HTTP/1.1\r\n" + HOST +
                                   b"Connection: close\r\n\r\n"))  # fmt: skip
    assert code == 200 and b"ok" in body


def test_an_empty_host_is_valid_http_and_served(server: ServerProcess) -> None:
    """RFC 9112 3.2: a client sends an empty Host when the target has no authority."""
    code, _, _ = parse(
        exchange(server, b"GET /livez HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n")
    )
    assert code == 200
