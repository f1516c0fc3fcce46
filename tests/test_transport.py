"""The SDK's lean keep-alive transport against a raw asyncio HTTP server on 127.0.0.1,
whose every byte the test controls."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from attacker_client import APIConnectionError, AsyncClient
from attacker_client._transport import KeepAliveTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Handler = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[bool]]


class RawServer:
    """Reads requests (head and Content-Length body); ``handler`` answers and returns
    whether to keep the connection open."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.bodies: list[bytes] = []
        self.closed = asyncio.Event()  # set whenever a connection was closed

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.bodies.append(body)
                if not await self.handler(head, body, writer):
                    return
        finally:
            self.open -= 1
            writer.close()
            await writer.wait_closed()
            self.closed.set()


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[RawServer, str]]:
    state = RawServer(handler)
    server = await asyncio.start_server(state.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield state, f"http://127.0.0.1:{port}"


def answer(body: bytes, *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n".encode()
        + extra
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def ok(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(answer(b'{"path": "' + head.split(b" ")[1] + b'"}'))
    await writer.drain()
    return True


async def test_requests_share_a_few_kept_alive_connections() -> None:
    async with (
        raw_server(ok) as (server, url),
        httpx.AsyncClient(transport=KeepAliveTransport(max_connections=3)) as client,
    ):
        answers = await asyncio.gather(*(client.get(f"{url}/item/{i}") for i in range(40)))
        assert [a.json()["path"] for a in answers] == [f"/item/{i}" for i in range(40)]
        assert server.most_open <= 3
        for i in range(5):  # one at a time: one connection, reused
            assert (await client.get(f"{url}/again/{i}")).status_code == 200
        assert server.connections <= 3
        posted = await client.post(f"{url}/inject", json={"items": [1, 2, 3]})
        assert posted.status_code == 200 and server.bodies[-1] == b'{"items":[1,2,3]}'


async def test_chunked_bodies_and_connection_close_are_honoured() -> None:
    async def chunked(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\ntransfer-encoding: chunked\r\n"
            b"retry-after: 1\r\n\r\n4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\n\r\n"
        )
        await writer.drain()
        return True

    async with (
        raw_server(chunked) as (_, url),
        httpx.AsyncClient(transport=KeepAliveTransport()) as client,
    ):
        response = await client.get(url + "/x")
        assert response.status_code == 429 and response.content == b"abcdefg"
        assert response.headers["retry-after"] == "1"

    async def closing(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(b"{}", extra=b"connection: close\r\n"))
        await writer.drain()
        return False

    async with (
        raw_server(closing) as (server, url),
        httpx.AsyncClient(transport=KeepAliveTransport()) as client,
    ):
        for _ in range(3):
            assert (await client.get(url + "/x")).status_code == 200
        assert server.connections == 3  # never reused a connection the server closed


async def test_answers_without_a_body_do_not_wait_for_one() -> None:
    async def no_content(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")  # no length: none is needed
        await writer.drain()
        return True

    async with (
        raw_server(no_content) as (server, url),
        httpx.AsyncClient(transport=KeepAliveTransport(), timeout=2) as client,
    ):
        for _ in range(3):
            response = await client.delete(url + "/admin/worlds/w")
            assert response.status_code == 204 and response.content == b""
        assert server.connections == 1


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def once(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(b"{}"))
        await writer.drain()
        return False  # closes after answering, without saying so (an idle timeout)

    async with (
        raw_server(once) as (server, url),
        httpx.AsyncClient(transport=KeepAliveTransport()) as client,
    ):
        assert (await client.get(url + "/a")).status_code == 200
        await server.closed.wait()  # the server closed the idle connection
        assert (await client.get(url + "/b")).status_code == 200
        assert server.connections == 2


async def test_a_close_the_event_loop_has_not_seen_yet_is_detected() -> None:
    """The server closes after each answer while the client's loop is busy (blocked), so
    the loop never reads the close before the next request: the socket is asked."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[int] = []
    answered, closed = threading.Event(), threading.Event()

    def serve() -> None:
        for _ in range(2):
            connection, _ = listener.accept()
            accepted.append(1)
            with connection:
                while b"\r\n\r\n" not in connection.recv(65536):
                    pass
                connection.sendall(answer(b"{}"))
                # closed once the client has its answer, without saying so, as an idle
                # timeout does
                answered.wait(timeout=60)
            closed.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    async with httpx.AsyncClient(transport=KeepAliveTransport(), timeout=5) as client:
        assert (await client.post(f"http://127.0.0.1:{port}/a", json={})).status_code == 200
        answered.set()
        assert closed.wait(timeout=60)  # blocks the loop: it never reads the close
        assert (await client.post(f"http://127.0.0.1:{port}/b", json={})).status_code == 200
    thread.join(timeout=5)
    listener.close()
    assert len(accepted) == 2


async def test_a_lost_answer_and_a_slow_server_are_transport_errors() -> None:
    async def hang_up(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")
        await writer.drain()
        return False

    async with raw_server(hang_up) as (server, url):
        async with httpx.AsyncClient(transport=KeepAliveTransport()) as client:
            with pytest.raises(httpx.RemoteProtocolError, match="IncompleteReadError"):
                await client.get(url + "/x")
        # the SDK retries a lost answer, then names the request
        sdk = AsyncClient(url, "ca_key", max_retries=2, retry_seed=0)
        with pytest.raises(APIConnectionError, match="GET /topk/1"):
            await sdk.topk(1)
        await sdk.aclose()
        assert server.connections == 1 + 3

    timed_out = asyncio.Event()

    async def silent(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        await timed_out.wait()  # no answer before the client gave up
        return False

    async with (
        raw_server(silent) as (_, url),
        httpx.AsyncClient(transport=KeepAliveTransport(), timeout=0.2) as client,
    ):
        with pytest.raises(httpx.ReadTimeout):
            await client.get(url + "/x")
        timed_out.set()


async def test_nothing_listening_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with httpx.AsyncClient(transport=KeepAliveTransport()) as client:
        with pytest.raises(httpx.ConnectError, match=r"127\.0\.0\.1"):
            await client.get(f"http://127.0.0.1:{port}/x")


async def test_a_kept_alive_connection_closed_unanswered_is_sent_again_once() -> None:
    """A server that closes an idle connection as the next request goes out (its
    keep-alive timeout): a request safe to repeat (its method, or an Idempotency-Key) goes
    once more on a new connection; a POST without a key is an error, never sent twice (the
    server may have died mid-request: a second create_world would make a second world);
    a new connection closed unanswered is an error, sent nowhere else."""
    answered: dict[int, int] = {}

    async def one_per_connection(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if answered.get(id(writer)):
            return False  # closes without a byte of answer
        answered[id(writer)] = 1
        return await ok(head, body, writer)

    async with (
        raw_server(one_per_connection) as (server, url),
        httpx.AsyncClient(transport=KeepAliveTransport()) as client,
    ):
        assert (await client.get(f"{url}/topk/1")).status_code == 200
        assert (await client.get(f"{url}/topk/1")).status_code == 200
        assert server.connections == 2 and len(server.bodies) == 3
        keyed = {"Idempotency-Key": "k1"}
        response = await client.post(f"{url}/inject_user", json={}, headers=keyed)
        assert response.status_code == 200
        assert server.connections == 3 and len(server.bodies) == 5
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"{url}/admin/worlds", json={})
        assert server.connections == 3 and len(server.bodies) == 6

    async def never(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        return False

    async with (
        raw_server(never) as (server, url),
        httpx.AsyncClient(transport=KeepAliveTransport()) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"{url}/admin/worlds", json={})
        assert server.connections == 1


async def test_an_answer_cut_after_it_began_is_never_sent_again() -> None:
    """The server started answering, then closed: the request may have been done, so it is
    an error, even on a kept-alive connection."""
    answered: dict[int, int] = {}

    async def cut(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if answered.get(id(writer)):
            writer.write(b"HTTP/1.1 201 Created\r\n")  # the status line, then nothing
            await writer.drain()
            return False
        answered[id(writer)] = 1
        return await ok(head, body, writer)

    async with (
        raw_server(cut) as (server, url),
        httpx.AsyncClient(transport=KeepAliveTransport()) as client,
    ):
        assert (await client.post(f"{url}/admin/worlds", json={})).status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"{url}/admin/worlds", json={})
        assert len(server.bodies) == 2 and server.connections == 1
