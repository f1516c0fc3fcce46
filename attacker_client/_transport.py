"""A lean HTTP/1.1 keep-alive transport for plain-HTTP servers (the simulator on
127.0.0.1 or a private network).

An attack asks tens of thousands of tiny ``/topk`` questions. httpx's default transport
(httpcore) spends about 1 ms of CPU per request in its connection pool and event
machinery, more than the server spends answering, and client and server often share the
machine. This transport keeps a few connections open and speaks the small subset of
HTTP/1.1 the service uses (``Content-Length`` or chunked bodies, keep-alive), so a request
costs a fraction of that. Everything above the transport (URLs, headers, JSON, retries,
errors) is still httpx and the SDK. ``https`` URLs use httpx's own transport.
"""

from __future__ import annotations

import asyncio
import select

import httpx

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _closed_before_answering(connection: _Connection, exc: BaseException) -> bool:
    """The peer closed or reset the connection before a byte of the answer came."""
    if connection.answered:
        return False
    if isinstance(exc, asyncio.IncompleteReadError):
        return not exc.partial
    return isinstance(exc, (ConnectionResetError, BrokenPipeError))


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.answered = False  # whether the last exchange got a byte of its answer

    def close(self) -> None:
        self.writer.close()

    def closed(self) -> bool:
        """Whether the server has closed this idle connection. The event loop may not have
        read its FIN yet (the loop was busy), so the socket itself is asked too: an idle
        connection that is readable has been closed (or broken) by the server."""
        if self.reader.at_eof() or self.writer.is_closing():
            return True
        sock = self.writer.get_extra_info("socket")
        return sock is not None and bool(select.select([sock], [], [], 0)[0])

    async def exchange(
        self, head: bytes, body: bytes, method: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        """Send one request; the status, headers, body, and whether the connection stays open."""
        self.answered = False  # no byte of this request's answer yet
        self.writer.write(head + body)
        status_line = await self.reader.readuntil(b"\r\n")
        self.answered = True
        status = int(status_line.split(b" ", 2)[1])
        headers: list[tuple[bytes, bytes]] = []
        length, chunked, keep_alive = None, False, not status_line.startswith(b"HTTP/1.0")
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line[:-2].partition(b":")
            name, value = name.strip().lower(), value.strip()
            headers.append((name, value))
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                keep_alive = value.lower() != b"close"
        if method == "HEAD" or status in (204, 304) or status < 200:
            content = b""  # no body, whatever the headers say (RFC 9112, 6.3)
        elif chunked:
            content = await self._read_chunked()
        elif length is not None:
            content = await self.reader.readexactly(length)
        else:  # no length: the body runs until the server closes
            content, keep_alive = await self.reader.read(), False
        return status, headers, content, keep_alive

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """At most ``max_connections`` kept-alive connections per server; a request waits for a
    free one rather than opening more."""

    def __init__(self, max_connections: int = 8) -> None:
        self._max = max_connections
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = {}
        # made on first use: its TLS context costs ~36 ms, and a harness makes a client
        # per world
        self._fallback: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            self._fallback = self._fallback or httpx.AsyncHTTPTransport()
            return await self._fallback.handle_async_request(request)
        server = (url.host, url.port or 80)
        timeout = request.extensions.get("timeout", {})
        head, body = _head(request), await request.aread()
        async with self._slots.setdefault(server, asyncio.Semaphore(self._max)):
            idle = self._idle.setdefault(server, [])
            connection = None
            while idle and connection is None:
                connection = idle.pop()
                if connection.closed():  # the server closed it while it was idle
                    connection.close()
                    connection = None
            reused = connection is not None
            if connection is None:
                connection = await _connect(server, timeout.get("connect"), request)
            while True:
                try:
                    status, headers, content, keep_alive = await asyncio.wait_for(
                        connection.exchange(head, body, request.method), timeout.get("read")
                    )
                    break
                except TimeoutError as exc:
                    connection.close()
                    raise httpx.ReadTimeout(
                        f"no answer from {server} in time", request=request
                    ) from exc
                except (
                    OSError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    ValueError,
                ) as exc:
                    connection.close()
                    if (
                        reused
                        and _closed_before_answering(connection, exc)
                        and _repeatable(request)
                    ):
                        # most likely an idle connection the server closed (its keep-alive
                        # timeout) as the request went out: sent once more on a new
                        # connection, as HTTP clients do, but only a request that is safe
                        # to repeat (RFC 9110, 9.2.2), because a server that died
                        # mid-request is not told apart: a second create_world would make
                        # a second world
                        reused = False
                        connection = await _connect(server, timeout.get("connect"), request)
                        continue
                    # the SDK decides whether to send again (by the call's idempotency)
                    raise httpx.RemoteProtocolError(f"{server}: {exc!r}", request=request) from exc
            if keep_alive:
                idle.append(connection)
            else:
                connection.close()
            return httpx.Response(status, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        if self._fallback is not None:
            await self._fallback.aclose()


def _repeatable(request: httpx.Request) -> bool:
    """Idempotent by its method, or by the ``Idempotency-Key`` it carries (an injection)."""
    return request.method in _IDEMPOTENT_METHODS or "idempotency-key" in request.headers


async def _connect(
    server: tuple[str, int], timeout: float | None, request: httpx.Request
) -> _Connection:
    try:
        return _Connection(*await asyncio.wait_for(asyncio.open_connection(*server), timeout))
    except TimeoutError as exc:
        raise httpx.ConnectTimeout(f"{server}: no connection in time", request=request) from exc
    except OSError as exc:
        raise httpx.ConnectError(f"{server}: {exc!r}", request=request) from exc


def _head(request: httpx.Request) -> bytes:
    target = request.url.raw_path
    lines = [request.method.encode() + b" " + target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in request.headers.raw]
    return b"\r\n".join(lines) + b"\r\n\r\n"
