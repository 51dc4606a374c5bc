"""What the runtime assumes about asyncio's private internals, per CPython version: one table.

The runtime subclasses asyncio's selector loop and socket transport and, on its hot paths, builds
asyncio's handles itself, so it depends on things asyncio does not promise: which slots a
``Handle`` has (``call_soon`` writes every one of them), what the transport constructor leaves on
the instance, what the loop checks before it wraps a socket. Those change between minor versions.
Each difference the runtime has to know about is a field of the table below, with the version
that introduced it, and the rest of the runtime reads ``CURRENT`` instead of comparing
``sys.version_info`` itself: adding a version is adding a row, and a test compares each row with
the asyncio it describes (``tests/test_runtime_callbacks.py``).

What changed, from CPython's sources:

- 3.11 -> 3.12: ``_SelectorSocketTransport.__init__`` stores its write callback on the instance
  (``self._write_ready = self._write_sendmsg``; writes leave through ``sendmsg`` of a deque of
  memoryviews) and ``close()`` sets it to None to break the cycle it made. The runtime's
  transport has its own ``_write_ready`` method and a write queue of its own, so it takes the
  instance attribute away again: that needs no row, it is the same code on every version.
  ``_make_socket_transport`` and its siblings refuse a socket another open transport serves
  (``_ensure_fd_no_transport``): ``transports_check_fd``.
- 3.12 -> 3.13: the datagram transport counts 8 bytes of header per queued datagram and sends
  empty datagrams: the runtime inherits both, nothing to record. Handle slots are unchanged in
  both.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class AsyncioInternals:
    # Every slot Handle.__init__ sets (__weakref__ is not a field): what call_soon writes.
    handle_fields: tuple[str, ...]
    # And TimerHandle.__init__ on top of them: what call_at writes.
    timer_fields: tuple[str, ...]
    # The loop's _make_*_transport check that no open transport serves the socket already.
    transports_check_fd: bool


_HANDLE_FIELDS_311 = ("_context", "_loop", "_callback", "_args", "_cancelled", "_repr",
                      "_source_traceback")

ASYNCIO: dict[tuple[int, int], AsyncioInternals] = {
    (3, 11): AsyncioInternals(
        handle_fields=_HANDLE_FIELDS_311,
        timer_fields=_HANDLE_FIELDS_311 + ("_when", "_scheduled"),
        transports_check_fd=False,
    ),
    (3, 12): AsyncioInternals(
        handle_fields=_HANDLE_FIELDS_311,
        timer_fields=_HANDLE_FIELDS_311 + ("_when", "_scheduled"),
        transports_check_fd=True,
    ),
}
ASYNCIO[(3, 13)] = ASYNCIO[(3, 12)]  # unchanged in 3.13


def _current() -> AsyncioInternals:
    version = sys.version_info[:2]
    try:
        return ASYNCIO[version]
    except KeyError:
        supported = ", ".join("%d.%d" % v for v in sorted(ASYNCIO))
        raise ImportError(f"coroscope's runtime supports CPython {supported}, "
                          f"not {version[0]}.{version[1]}") from None


CURRENT = _current()
