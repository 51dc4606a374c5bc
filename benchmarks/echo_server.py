"""The echo server the echo benchmark measures: ``python -m benchmarks.echo_server --loop L``.

Prints its port on one line, echoes every byte it receives on every connection, exits when its
stdin closes. The same Protocol code runs on each loop, so the loop is the only difference.
"""
from __future__ import annotations

import argparse
import asyncio
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "runtime":
        import runtime

        return runtime.new_event_loop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    raise SystemExit(f"unknown loop {name!r}")


async def serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    # A thread waits on stdin, so the measured loop has no extra fd and no extra syscalls.
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop", default="runtime", choices=("runtime", "asyncio", "uvloop"))
    args = parser.parse_args()
    loop = new_loop(args.loop)
    try:
        loop.run_until_complete(serve())
    finally:
        loop.close()


if __name__ == "__main__":
    main()
