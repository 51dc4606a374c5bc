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
import collections
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


async def connect(port: int, conns: int, protocol_factory) -> list[Pinger]:
    """``conns`` connections to the echo server on 127.0.0.1:``port``; their protocols."""
    loop = asyncio.get_running_loop()
    return [(await loop.create_connection(protocol_factory, "127.0.0.1", port))[1] for _ in range(conns)]


class Pacer:
    """An offered load: requests at a fixed ``rate`` whatever the replies' latency, each
    counted with ``on_reply()`` when its reply is whole.

    A saturating ping-pong load needs as much CPU as the server it loads (both sides pay for
    the same syscalls and the same loopback TCP), so on a small machine it leaves no room on
    its core for anything else. At a fixed rate below the server's capacity it has room, and
    the server's busy time per request can be compared with and without a neighbour.

    Each connection carries at most one request. Tokens accrue at ``rate`` a second, and every
    millisecond each token sends a request on an idle connection. Tokens are capped at 10 ms
    worth, so a client delayed by a neighbour catches up in a burst no larger than that; a
    server slower than the rate runs out of idle connections, and fewer requests are served
    than offered (which the caller sees in its counts).
    """

    def __init__(self, rate: float, on_reply):
        self.rate = rate
        self.on_reply = on_reply
        self.idle: collections.deque[Pinger] = collections.deque()  # connections with no request in flight

    async def connect(self, port: int, conns: int) -> None:
        """``conns`` connections to the echo server on ``port``, idle until :meth:`run`."""
        self.idle.extend(await connect(port, conns, self._pinger))

    def _pinger(self) -> Pinger:
        pinger = Pinger(lambda: self._replied(pinger))
        return pinger

    def _replied(self, pinger: Pinger) -> bool:
        self.on_reply()
        self.idle.append(pinger)
        return False

    async def run(self) -> None:
        burst = self.rate * 0.01
        tokens, last = 0.0, time.monotonic()
        while True:
            await asyncio.sleep(0.001)
            now = time.monotonic()
            tokens, last = min(tokens + self.rate * (now - last), burst), now
            while tokens >= 1 and self.idle:
                self.idle.popleft().send()
                tokens -= 1


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
    pingers = await connect(port, conns, lambda: Pinger(state.replied))
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
