"""Planted leak: an asyncio task left pending.

``Poller.start`` spawns a background refresh task; the leaky ``stop`` forgets to cancel it,
so each start/stop cycle leaves one more task pending on the loop. ``FixedPoller`` cancels
it and waits for it. The cycles are coroutines: ``coroscope leaks`` runs them all on one loop.

    coroscope leaks --cycles 20 -- examples/leaks/poller.py
    coroscope leaks --cycles 20 -- examples/leaks/poller.py:cycle_fixed
"""
from __future__ import annotations

import asyncio


class Poller:
    def __init__(self, interval: float = 3600.0):
        self.interval = interval
        self.refreshes = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._refresh_forever())  # PLANTED: task

    async def _refresh_forever(self) -> None:
        while True:
            self.refreshes += 1
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        self._task = None           # the bug: dropped, never cancelled


class FixedPoller(Poller):
    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


async def _lifecycle(cls) -> None:
    poller = cls()
    await poller.start()
    await asyncio.sleep(0)
    await poller.stop()


async def cycle() -> None:
    await _lifecycle(Poller)


async def cycle_fixed() -> None:
    await _lifecycle(FixedPoller)
