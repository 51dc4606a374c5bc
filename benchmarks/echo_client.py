"""The echo benchmark's load: ``python -m benchmarks.echo_client PORT CONNS WARMUP SECONDS [sync]``.

uvloop, one message (``MESSAGE``, 64 bytes) in flight per connection (no pipelining): send,
wait for all of it to come back, send again. After WARMUP seconds of load it lets the requests
in flight finish, then:

- plain: prints ``start``, loads for SECONDS, prints ``end REQUESTS CPU_SECONDS`` and exits;
- ``sync`` (what ``benchmarks.echo`` uses to count syscalls exactly): prints ``ready`` and
  waits for a line on stdin; loads for SECONDS, lets the requests in flight finish and prints
  ``end REQUESTS CPU_SECONDS ELAPSED``; closes its connections at the next line. The server
  is idle at both edges of that window, so the syscalls counted between ``ready`` and ``end``
  belong to exactly REQUESTS requests.

CPU_SECONDS close to the window's length would mean the client, not the server, was the limit.
"""
from __future__ import annotations

import asyncio
import sys
import time

import uvloop

MESSAGE = b"x" * 64


class State:
    def __init__(self, conns: int):
        self.conns = conns
        self.running = False  # when False, a connection whose reply arrives goes idle
        self.completed = 0  # requests whose reply arrived while counting
        self.idle = 0
        self.all_idle: asyncio.Future | None = None

    def replied(self) -> bool:
        """A reply came back: count it; go on while running, else go idle."""
        self.completed += 1
        if self.running:
            return True
        self.idle += 1
        if self.idle == self.conns:
            self.all_idle.set_result(None)
        return False


class Pinger(asyncio.Protocol):
    """One MESSAGE in flight on one connection: ``send()`` it; when all of it has come back,
    call ``replied()`` and send again while that returns True. The echo benchmarks' loads
    differ only in what ``replied`` counts and when it stops."""

    def __init__(self, replied):
        self.replied = replied
        self.pending = 0

    def connection_made(self, transport):
        self.transport = transport

    def send(self):
        self.pending = len(MESSAGE)
        self.transport.write(MESSAGE)

    def data_received(self, data):
        self.pending -= len(data)
        if self.pending <= 0 and self.replied():
            self.send()


async def run_phase(state: State, pingers: list[Pinger], seconds: float) -> float:
    """Load for `seconds`, then let every request in flight finish: the server ends idle."""
    loop = asyncio.get_running_loop()
    state.running, state.idle, state.all_idle = True, 0, loop.create_future()
    start = time.monotonic()
    for pinger in pingers:
        pinger.send()
    await asyncio.sleep(seconds)
    state.running = False
    await state.all_idle
    return time.monotonic() - start


async def load(port: int, conns: int, warmup: float, seconds: float, synchronized: bool) -> None:
    loop = asyncio.get_running_loop()
    state = State(conns)
    pingers = []
    for _ in range(conns):
        _transport, pinger = await loop.create_connection(lambda: Pinger(state.replied), "127.0.0.1", port)
        pingers.append(pinger)
    await run_phase(state, pingers, warmup)
    if synchronized:
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # the counter is reset: go
    else:
        print("start", flush=True)
    state.completed = 0
    cpu0 = time.process_time()
    elapsed = await run_phase(state, pingers, seconds)
    cpu = time.process_time() - cpu0
    if synchronized:
        print(f"end {state.completed} {cpu:.3f} {elapsed:.6f}", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # counted: now the connections may go
    else:
        print(f"end {state.completed} {cpu:.3f}", flush=True)
    for pinger in pingers:
        pinger.transport.abort()


def main() -> None:
    port, conns, warmup, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    synchronized = sys.argv[5:6] == ["sync"]
    uvloop.run(load(port, conns, warmup, seconds, synchronized))


if __name__ == "__main__":
    main()
