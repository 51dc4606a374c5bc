"""A small service with planted problems, for `coroscope top` to show (and its tests to find).

    COROSCOPE_TRACE=1 COROSCOPE_LOOP=runtime PYTHONPATH=diag/bootstrap:. \\
        python -m examples.dashboard_target [--serve] [--requests N]

What it runs: two named workers fed by a queue, a ticker, a parked task waiting on a future
nobody resolves, and, with ``--serve``, an HTTP/1.1 keep-alive server on 127.0.0.1 with a
client task that sends it ``--requests`` requests (each marked with ``runtime.request``).
On stdin it takes commands, and answers each on stdout when done (tests sync on the answers,
never on time):

    block MS   one step of task "planted-blocker" calls time.sleep(MS / 1000) in crunch()
    leak N     task "planted-leaker" opens N sockets and keeps them (an fd leak)
    spin N     task "planted-spinner" yields with asyncio.sleep(0) N times: it wakes itself
               (answer: "spun")
    unawaited  creates a coroutine planted_unawaited() and drops it without awaiting it
               (answer: "unawaited FILE:LINE", where it was created)
    tasks      prints "tasks" once every planted task has been created (answer: "tasks")
    quit       exits
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time

LEAKED: list[socket.socket] = []


def crunch(ms: float) -> None:
    time.sleep(ms / 1000)          # the planted blocking call: the whole loop stops here


async def planted_blocker(ms: float) -> None:
    crunch(ms)
    await asyncio.sleep(0)


async def planted_leaker(n: int) -> None:
    for _ in range(n):
        LEAKED.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        await asyncio.sleep(0)


async def planted_spinner(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)     # busy-polling: each step queues the next one itself


async def planted_unawaited() -> None:
    pass


def drop_a_coroutine() -> str:
    coro, line = planted_unawaited(), sys._getframe().f_lineno    # created here, never awaited
    del coro
    return f"{__file__}:{line}"


async def worker(queue: asyncio.Queue) -> None:
    while True:
        item = await queue.get()
        await asyncio.sleep(0.001 * (item % 3))
        queue.task_done()


async def ticker(queue: asyncio.Queue) -> None:
    n = 0
    while True:
        n += 1
        queue.put_nowait(n)
        await asyncio.sleep(0.05)


async def parked(never: asyncio.Future) -> None:
    await never                    # nobody ever resolves it: pending forever


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        from runtime import request
    except ImportError:
        request = None
    while True:
        line = await reader.readline()
        if not line:
            break
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        body = b"hello\n"
        if request is not None:
            with request("GET /"):
                await asyncio.sleep(0.002)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    writer.close()


async def client(port: int, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        await reader.readexactly(6)
        await asyncio.sleep(0.01)
    writer.close()


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def main(args) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    keep = [
        asyncio.create_task(worker(queue), name="worker-1"),
        asyncio.create_task(worker(queue), name="worker-2"),
        asyncio.create_task(ticker(queue), name="ticker"),
        asyncio.create_task(parked(loop.create_future()), name="parked"),
    ]
    if args.serve:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        keep.append(asyncio.create_task(client(port, args.requests), name="load-client"))
        say(f"serving on 127.0.0.1:{port}")
    commands: asyncio.Queue = asyncio.Queue()
    loop.add_reader(sys.stdin.fileno(), lambda: commands.put_nowait(sys.stdin.readline()))
    say("ready")
    while True:
        line = (await commands.get()).split()
        if not line or line[0] == "quit":
            break
        if line[0] == "block":
            await asyncio.create_task(planted_blocker(float(line[1])), name="planted-blocker")
            say("blocked")
        elif line[0] == "leak":
            await asyncio.create_task(planted_leaker(int(line[1])), name="planted-leaker")
            say(f"leaked {len(LEAKED)}")
        elif line[0] == "spin":
            await asyncio.create_task(planted_spinner(int(line[1])), name="planted-spinner")
            say("spun")
        elif line[0] == "unawaited":
            say(f"unawaited {drop_a_coroutine()}")
        elif line[0] == "tasks":
            say("tasks")
    loop.remove_reader(sys.stdin.fileno())
    for task in keep:
        task.cancel()


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="serve HTTP and drive load at it")
    parser.add_argument("--requests", type=int, default=2000, help="requests the client sends")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
