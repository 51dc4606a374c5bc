"""Planted leak: an event loop subclass that forgets its eventfd on close (Glommio's bug, seed 001).

``NotifierLoop`` adds a notifier eventfd (other threads poke the loop through it). The leaky
version unregisters it on close but never closes it: one eventfd per loop lifecycle. The fixed
version closes it. Built on coroscope's runtime loop when it is importable, else on asyncio's.

    coroscope leaks --cycles 20 -- examples/leaks/eventfd_loop.py            # leaks
    coroscope leaks --cycles 20 -- examples/leaks/eventfd_loop.py:cycle_fixed
"""
from __future__ import annotations

import asyncio
import os

try:
    from runtime import Loop as BaseLoop
except ImportError:  # the runtime is optional for this example
    BaseLoop = asyncio.SelectorEventLoop


class NotifierLoop(BaseLoop):
    close_notifier = True

    def __init__(self):
        super().__init__()
        self._notify_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # PLANTED: eventfd
        self.add_reader(self._notify_fd, self._drain_notifier)

    def notify(self) -> None:
        os.eventfd_write(self._notify_fd, 1)

    def _drain_notifier(self) -> None:
        try:
            os.eventfd_read(self._notify_fd)
        except BlockingIOError:
            pass

    def close(self) -> None:
        if not self.is_closed():
            self.remove_reader(self._notify_fd)
            if self.close_notifier:
                os.close(self._notify_fd)
        super().close()


class LeakyNotifierLoop(NotifierLoop):
    close_notifier = False          # the bug: the eventfd outlives the loop


def _lifecycle(loop_class) -> None:
    loop = loop_class()
    try:
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()


def cycle() -> None:
    _lifecycle(LeakyNotifierLoop)


def cycle_fixed() -> None:
    _lifecycle(NotifierLoop)
