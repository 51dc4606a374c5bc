"""A process that creates and finishes asyncio tasks as fast as it can, for torn-read tests.

    python -m examples.task_churn [--loop asyncio|runtime] [--width N]

``width`` tasks are alive at any moment, each ``churn_outer -> churn_inner -> asyncio.sleep(0..1
ms)``; each one that finishes is replaced at once, so a reader from outside sees task objects
freed and their memory reused for new ones while it reads.  Ten ``steady`` tasks wait forever on
an Event in ``steady_waiter``, so a reader always has something that does not change.  Prints
one JSON line ``{"ready": true, "pid": ...}`` when running, then churns until killed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys


async def churn_inner(delay: float) -> None:
    await asyncio.sleep(delay)


async def churn_outer(delay: float) -> None:
    await churn_inner(delay)


async def steady_waiter(event: asyncio.Event) -> None:
    await event.wait()


async def main(width: int) -> None:
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    keep = [loop.create_task(steady_waiter(event), name=f"steady-{i}") for i in range(10)]
    alive: set = set()
    created = 0

    def spawn() -> None:
        nonlocal created
        created += 1
        task = loop.create_task(churn_outer(random.random() / 1000), name=f"churn-{created}")
        alive.add(task)
        task.add_done_callback(finished)

    def finished(task) -> None:
        alive.discard(task)
        spawn()

    for _ in range(width):
        spawn()
    await asyncio.sleep(0.05)
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    await asyncio.gather(*keep)


def cli(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", choices=["asyncio", "runtime"], default="asyncio")
    parser.add_argument("--width", type=int, default=200)
    args = parser.parse_args(argv)
    if args.loop == "runtime":
        import runtime
        loop = runtime.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(main(args.width))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
