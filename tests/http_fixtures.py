"""A throw-away HTTP server on 127.0.0.1 for tests of clients (fetching, waiting)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def http_server(handler: Callable[..., Any]) -> Iterator[str]:
    """Serve ``handler`` (a request handler class or partial) on a free port in a thread;
    yields the base URL, without a trailing slash, and stops the server after."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
