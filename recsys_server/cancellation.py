"""Cooperative cancellation of work running on a thread (the service's retrain jobs).

A thread cannot be stopped from outside, so a long computation checks, at points where
stopping leaves nothing half-done (between training batches, epochs, grid points),
whether its job was cancelled, and raises :class:`Cancelled` if so. The flag travels in a
context variable rather than as an argument: the training loops of every victim check it
without each ``retrained`` signature carrying a token, and outside a job (``recsys-server
train``, the tests) there is none and the check does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

_cancel: ContextVar[threading.Event | None] = ContextVar("recsys_cancel", default=None)


class Cancelled(Exception):
    """The job this computation runs for was cancelled."""


def check_cancelled() -> None:
    """Raise :class:`Cancelled` if the calling thread's job was cancelled."""
    event = _cancel.get()
    if event is not None and event.is_set():
        raise Cancelled


def run_cancellable(cancel: threading.Event, function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` on this thread, its checks reading ``cancel``; it never starts
    if ``cancel`` is already set."""
    token = _cancel.set(cancel)
    try:
        check_cancelled()
        return function(*args)
    finally:
        _cancel.reset(token)
