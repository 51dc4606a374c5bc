"""A program whose syscalls per request are known: the syscall counter's exactness check.

``--requests`` requests (100) are spread over ``--tasks`` tasks (10); each request makes exactly
``--getppid`` getppid calls (3) and one write of one byte to /dev/null, with ``await
asyncio.sleep(0)`` between its calls so that the tasks' requests interleave on the one loop
thread. Nothing else happens inside a request, so ``coroscope syscalls -- python
examples/syscall_exact.py`` must report exactly 3 getppid and 1 write per request.

The same work runs once first outside any request (``--warmup``): the interpreter's allocator
then has the memory it needs, so no request grows the heap with an mmap of its own.

Run it under coroscope (which turns tracing on), or alone: it prints what it did.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from runtime.requests import request


async def worker(n_requests: int, getppid: int, fd: int, marked: bool = True) -> None:
    for _ in range(n_requests):
        with request("exact") if marked else contextlib.nullcontext():
            for _ in range(getppid):
                os.getppid()
                await asyncio.sleep(0)      # let the other tasks' requests run in between
            os.write(fd, b"x")
            await asyncio.sleep(0)


async def warm_up(n_requests: int, n_tasks: int, getppid: int, fd: int) -> None:
    """The same work in tasks of its own, outside any request (its tasks are not workers)."""
    async def unmarked(n: int) -> None:
        await worker(n, getppid, fd, marked=False)

    per_task, extra = divmod(n_requests, n_tasks)
    await asyncio.gather(*(unmarked(per_task + (i < extra)) for i in range(n_tasks)))


async def main(args) -> None:
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        await asyncio.sleep(args.start_delay)   # time for a collector to find this thread's slot
        if args.go_file:                         # or: wait until whoever attaches says go
            while not os.path.exists(args.go_file):
                await asyncio.sleep(0.01)
        per_task, extra = divmod(args.requests, args.tasks)
        if args.warmup:
            await warm_up(args.requests, args.tasks, args.getppid, fd)
        await asyncio.gather(*(worker(per_task + (i < extra), args.getppid, fd) for i in range(args.tasks)))
        await asyncio.sleep(args.end_delay)
    finally:
        os.close(fd)
    print(f"{args.requests} requests over {args.tasks} tasks, {args.getppid} getppid + 1 write each")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--getppid", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="1: run the work once unmarked first")
    p.add_argument("--start-delay", type=float, default=1.0)
    p.add_argument("--end-delay", type=float, default=0.1)
    p.add_argument("--go-file", default=None, help="start the requests once this file exists")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
