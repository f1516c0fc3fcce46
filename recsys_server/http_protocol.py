"""uvicorn's HTTP/1.1 protocol (h11), with its parser's errors answered as problem+json.

A request that is not valid HTTP (a bad request line or header, no ``Host``, a
``Content-Length`` that is not a number, broken chunked framing, a header section past
the parser's limit) never reaches the app: uvicorn answers it from the protocol with a
``text/plain`` 400. Here the same answer is an RFC 9457 problem with the parser's reason,
and the status h11 suggests (431 for a header section that is too large, 501 for a
transfer coding other than chunked). The connection is closed after it, as uvicorn
does: the parser cannot find the next request.

When the app has already started its answer (e.g. a 401 sent before a broken chunked
body was read), no second answer can go on the same connection: it is closed, as before.
When the app has not, the problem is the answer and the app's request ends as if the
client had gone.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE  # as uvicorn imports it
from uvicorn.protocols.http.h11_impl import H11Protocol

from recsys_server.api.problems import PROBLEM_JSON
from shared.schemas import Problem

# what a client branches on; titles say what happened in words
_KINDS = {
    400: ("malformed-request", "The request is not valid HTTP/1.1"),
    431: ("headers-too-large", "The request's header section is too large"),
    501: ("not-implemented", "The request needs an HTTP feature this server lacks"),
}


def malformed_request_problem(status: int, reason: str) -> bytes:
    """The problem document of a request the HTTP parser refused (its reason from h11)."""
    kind, title = _KINDS.get(status, _KINDS[400])
    detail = f"the HTTP parser refused the request: {reason}" if reason else title
    problem = Problem(type=kind, title=title, status=status, detail=detail)
    return problem.model_dump_json(exclude_none=True).encode()


class _RecordingConnection(h11.Connection):
    """h11's connection, keeping the last parser error: uvicorn catches it and only says
    'Invalid HTTP request received.', losing the reason and the status hint."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.last_error = exc
            raise


class ProblemH11Protocol(H11Protocol):
    """Pass as ``uvicorn.run(..., http=ProblemH11Protocol)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = self.config.h11_max_incomplete_event_size  # uvicorn's own default when unset
        self.conn = _RecordingConnection(h11.SERVER, limit or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE)

    def send_400_response(self, msg: str) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):  # an answer already began
            self.transport.close()
            return
        error = self.conn.last_error if isinstance(self.conn, _RecordingConnection) else None
        status = error.error_status_hint if error is not None else 400
        body = malformed_request_problem(status, str(error) if error is not None else "")
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()
        # a request whose body broke while the app was handling it: the app's own answer
        # now has nowhere to go (h11 would raise on it); it is treated as a client gone
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
