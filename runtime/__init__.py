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

import asyncio
import os
import sys

from .loop import EventLoopPolicy, Loop
from .requests import request

__all__ = ["Loop", "EventLoopPolicy", "new_event_loop", "run", "install", "install_from_env",
           "request"]

LOOP_CHOICES = ("runtime", "asyncio", "uvloop")


def new_event_loop() -> Loop:
    return Loop()


def run(main, *, debug=None):
    """asyncio.run(main) on a runtime loop."""
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)


def install() -> None:
    """Make the runtime's policy asyncio's: asyncio.run() and new_event_loop() use runtime loops."""
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
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        print(f"coroscope: COROSCOPE_LOOP={choice!r} is not one of {', '.join(LOOP_CHOICES)}; "
              "leaving the event loop as it is", file=sys.stderr)
