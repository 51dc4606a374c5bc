"""Requests: the unit the syscall counter, the dashboard and the CI gate divide by.

``request(name)`` marks one, as a context manager or a decorator (of coroutine functions and
plain functions). Its id lives in a ContextVar, ``REQUEST_ID``: asyncio copies the context into
every task created inside, so child tasks inherit the request without anyone passing it; and the
event loop's tracer reads it from each handle's context (``handle._context.get(REQUEST_ID)``)
to put it in the thread's slot before every step.

Servers written with protocols have no place to put a ``with``: ``per_data_received(factory)``
wraps a protocol factory so that each ``data_received`` (or ``buffer_updated``) call is one
request, for the duration of that call.

Ids are process-wide, start at 1 and never repeat (0 means "no request"). Marking a request
costs a ContextVar set/reset when tracing is off; with tracing on it also writes request begin
and end records and the thread slot.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import time

from .tracing import TRACE

REQUEST_ID: contextvars.ContextVar[int] = contextvars.ContextVar("coroscope_request_id", default=0)

_next_id = itertools.count(1).__next__      # atomic under the GIL


def current_request() -> int:
    """The id of the request the caller runs in, 0 if none."""
    return REQUEST_ID.get()


class request:
    """Mark a request: ``with request("GET /users"):`` or ``@request("handler")``.

    The id is assigned when the block is entered (``.id``); entering twice (as a decorator does
    on every call) gives a new request each time. ``name`` may be changed while the request
    runs: the end record then carries the new one, which readers use for the whole request.
    """

    __slots__ = ("name", "id", "_token", "_parent", "_t0", "_begun_as")

    def __init__(self, name: str = "request"):
        self.name = name
        self.id = 0
        self._token = None
        self._begun_as = name

    def __enter__(self) -> "request":
        self._parent = REQUEST_ID.get()
        self.id = _next_id()
        self._token = REQUEST_ID.set(self.id)
        self._t0 = time.monotonic_ns()
        self._begun_as = self.name
        if TRACE.on:
            TRACE.request_begin(self.id, self.name, self._parent)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if TRACE.on:
            # a name set while the request ran (a web framework's route template, known only
            # once it has routed the request) goes with the end record
            renamed = self.name if self.name != self._begun_as else None
            TRACE.request_end(self.id, time.monotonic_ns() - self._t0, exc_type is not None,
                              self._parent, renamed)
        REQUEST_ID.reset(self._token)
        self._token = None

    async def __aenter__(self) -> "request":
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func):
        name = self.name
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args, **kwargs):
                with request(name):
                    return await func(*args, **kwargs)
            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with request(name):
                return func(*args, **kwargs)
        return wrapper


def per_data_received(protocol_factory, name: str | None = None):
    """Wrap a protocol factory: each ``data_received``/``buffer_updated`` call is one request.

    Usage: ``loop.create_server(per_data_received(EchoProtocol), host, port)``.
    """
    def factory(*args, **kwargs):
        proto = protocol_factory(*args, **kwargs)
        return mark_data_received(proto, name)
    return factory


def mark_data_received(proto, name: str | None = None):
    """Make each ``data_received``/``buffer_updated`` call of this protocol instance a request."""
    label = name or f"{type(proto).__qualname__}.data_received"
    for method in ("data_received", "buffer_updated"):
        original = getattr(proto, method, None)
        if original is None:
            continue

        def counted(data, _original=original):
            with request(label):
                return _original(data)
        setattr(proto, method, counted)
    return proto
