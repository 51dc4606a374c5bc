"""coroscope's coroutine runtime: an asyncio event loop that makes as few syscalls as the work needs.

    import runtime
    runtime.run(main())                 # like asyncio.run, on the runtime's loop
    runtime.install()                   # or: every asyncio.new_event_loop() is a runtime loop
    loop = runtime.new_event_loop()

``coroscope run -- python app.py`` and ``python -m runtime app.py`` run an unchanged asyncio
program on it. How the loop is built: ``runtime.loop`` (the loop), ``runtime.poller`` (epoll),
``runtime.transports`` (the socket transports); its tracepoints: ``runtime.tracing``.
"""
from __future__ import annotations

import os
import sys

__all__ = ["Loop", "EventLoopPolicy", "new_event_loop", "run", "install", "install_from_env",
           "request"]

LOOP_CHOICES = ("runtime", "asyncio", "uvloop")

# The loop, its policy and ``request`` are imported when first asked for (PEP 562): coroscope's
# commands read ``runtime.probefile`` and ``runtime.tracing``'s constants, and importing the
# loop (and asyncio with it) only for that was most of a short command's start-up.
_LAZY = {"Loop": ".loop", "EventLoopPolicy": ".loop", "request": ".requests"}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def new_event_loop() -> "Loop":
    from .loop import Loop
    return Loop()


def run(main, *, debug=None):
    """asyncio.run(main) on a runtime loop."""
    import asyncio
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)


def install() -> None:
    """Make the runtime's policy asyncio's: asyncio.run() and new_event_loop() use runtime loops."""
    import asyncio

    from .loop import EventLoopPolicy
    asyncio.set_event_loop_policy(EventLoopPolicy())


def install_from_env() -> None:
    """Called at start-up in targets coroscope launches: COROSCOPE_LOOP selects the loop.

    runtime: this runtime; uvloop: uvloop's policy; asyncio or unset: leave asyncio as it is.
    """
    choice = os.environ.get("COROSCOPE_LOOP", "").strip().lower()
    if not choice or choice == "asyncio":
        return
    if choice == "runtime":
        install()
    elif choice == "uvloop":
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        print(f"coroscope: COROSCOPE_LOOP={choice!r} is not one of {', '.join(LOOP_CHOICES)}; "
              "leaving the event loop as it is", file=sys.stderr)
