"""A traced line service that can say what is true inside it, for the exporter's tests.

    python -m examples.fleet_service [--idle-tasks N]

On the coroscope runtime with tracing on: it prints ``port N`` and serves 127.0.0.1:N. Every
line a client sends is one request named ``echo`` (``runtime.request``) and is echoed back.
The line ``truth`` is not a request: the answer is one JSON line with what the process holds
now, counted by the process itself (tasks alive: ``asyncio.all_tasks()``; requests done), so a
test can compare what the exporter published with it. ``--idle-tasks`` parks that many tasks
on a future nobody resolves; ``--busy`` adds a task that burns CPU in ``busy_work`` (for
profiles). Each connection has its own handler task.
"""
from __future__ import annotations

import argparse
import asyncio
import json

import runtime
from runtime import tracing
from runtime.requests import request

DONE = {"requests": 0}


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            if line.strip() == b"truth":
                writer.write(json.dumps({"tasks": len(asyncio.all_tasks()),
                                         "requests": DONE["requests"]}).encode() + b"\n")
            else:
                with request("echo"):
                    writer.write(line)
                    DONE["requests"] += 1
            await writer.drain()
    finally:
        writer.close()


async def wait_for(never: asyncio.Future) -> None:
    await never


def busy_work() -> int:
    x = 0
    for i in range(20_000):
        x = (x * 31 + i) % 1000003
    return x


async def busy() -> None:
    while True:
        busy_work()
        await asyncio.sleep(0.001)


async def main(idle_tasks: int, spin: bool) -> None:
    never = asyncio.get_running_loop().create_future()
    parked = [asyncio.create_task(wait_for(never), name=f"parked-{i}")
              for i in range(idle_tasks)]
    if spin:
        parked.append(asyncio.create_task(busy(), name="busy"))
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()
    del parked


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-tasks", type=int, default=3)
    parser.add_argument("--busy", action="store_true", help="a task burns CPU in busy_work()")
    args = parser.parse_args()
    tracing.enable()
    try:
        runtime.run(main(args.idle_tasks, args.busy))
    except KeyboardInterrupt:
        pass
