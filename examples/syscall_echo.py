"""An echo server that marks each message as a request, with its load built in: the program the
syscall counter's loop comparison runs (``coroscope syscalls --compare asyncio,uvloop,runtime --
python examples/syscall_echo.py``).

It serves on 127.0.0.1 on whatever loop asyncio's policy gives (coroscope sets it with
COROSCOPE_LOOP; ``--loop`` sets it here), wraps the protocol with
``runtime.requests.per_data_received`` so every ``data_received`` is one request, runs its own
load client as a separate process (``--client``: its syscalls are not the server's) for
``--seconds``, and exits when the client is done. The client keeps one 64-byte message in
flight per connection, like the echo benchmark's.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time

from runtime.requests import per_data_received

MESSAGE = b"x" * 64


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def serve(args) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(per_data_received(Echo, "echo"), "127.0.0.1", 0, backlog=512)
    port = server.sockets[0].getsockname()[1]
    await asyncio.sleep(args.start_delay)
    cpu0 = time.process_time()
    client = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", str(port), "--connections", str(args.connections),
        "--seconds", str(args.seconds), stdout=asyncio.subprocess.PIPE)
    out, _ = await client.communicate()
    server_cpu = time.process_time() - cpu0         # this server's CPU (user + kernel) under load
    server.close()
    await server.wait_closed()
    done, elapsed, cpu = out.decode().split()[-3:]
    print(f"echo loop={type(loop).__module__}.{type(loop).__name__} requests={done} "
          f"seconds={elapsed} client_cpu={cpu} server_cpu={server_cpu:.3f}", flush=True)


class Pinger(asyncio.Protocol):
    def __init__(self, state, think: float = 0.0):
        self.state = state
        self.think = think

    def connection_made(self, transport):
        self.transport = transport
        self.pending = len(MESSAGE)
        transport.write(MESSAGE)

    def data_received(self, data):
        self.pending -= len(data)
        if self.pending <= 0:
            self.state["done"] += 1
            if self.state["running"]:
                self.pending = len(MESSAGE)
                if self.think:
                    asyncio.get_running_loop().call_later(self.think, self.transport.write, MESSAGE)
                else:
                    self.transport.write(MESSAGE)


async def load(port: int, connections: int, seconds: float, think: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    state = {"done": 0, "running": True}
    cpu0, t0 = time.process_time(), time.monotonic()
    transports = [(await loop.create_connection(lambda: Pinger(state, think), "127.0.0.1", port))[0]
                  for _ in range(connections)]
    await asyncio.sleep(seconds)
    state["running"] = False
    await asyncio.sleep(0.05 + think)               # replies in flight come back
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    for t in transports:
        t.close()
    print(f"{state['done']} {elapsed:.3f} {cpu:.3f}", flush=True)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--start-delay", type=float, default=0.3)
    p.add_argument("--loop", choices=("asyncio", "uvloop", "runtime"), default=None)
    p.add_argument("--client", type=int, metavar="PORT", default=None, help=argparse.SUPPRESS)
    p.add_argument("--think-ms", type=float, default=0.0,
                   help="the client waits this long after each reply before the next message")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    if args.client is not None:
        try:
            import uvloop
            uvloop.run(load(args.client, args.connections, args.seconds, args.think_ms / 1000))
        except ImportError:
            asyncio.run(load(args.client, args.connections, args.seconds, args.think_ms / 1000))
        sys.exit(0)
    if args.loop == "runtime":
        import runtime
        runtime.install()
    elif args.loop == "uvloop":
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve(args))
