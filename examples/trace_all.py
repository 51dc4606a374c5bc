"""A small program that makes the runtime hit every tracepoint kind once or more.

    python -m examples.trace_all            # then, from another shell: coroscope probe PID

It enables tracing itself, runs a server and a client over 127.0.0.1, tasks that return, raise
and get cancelled, a timer that fires and one cancelled, a pipe, an executor job, a request,
five fds ready in one poll, a deliberately slow step and a coroutine never awaited. Then it prints one JSON line of facts (its pid, the fds it used, the
names it gave) and waits until its stdin closes, so a reader in another process can attach.
Tests use the facts to check each record's fields.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time

import runtime
from runtime import tracing
from runtime.requests import per_data_received

SLOW_STEP_MS = 30


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def returns() -> int:
    await asyncio.sleep(0.001)           # timer add + fire
    return 42


async def raises() -> None:
    raise KeyError("trace_all")


async def sleeps_forever() -> None:
    await asyncio.sleep(3600)


async def slow() -> None:
    time.sleep(SLOW_STEP_MS * 1.5 / 1000)   # blocks the loop: one slow step


async def main(facts: dict) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(per_data_received(Echo, "echo"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    facts["server_fd"] = server.sockets[0].fileno()

    with runtime.request("trace-all"):
        facts["request_task_result"] = await asyncio.create_task(returns(), name="returns")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        facts["client_fd"] = writer.get_extra_info("socket").fileno()
        for _ in range(3):
            writer.write(b"ping\n")
            await reader.readline()
        writer.close()
        await writer.wait_closed()

    failing = asyncio.create_task(raises(), name="raises")
    try:
        await failing
    except KeyError:
        pass
    # named after it was created and before its first step: a TASK_NAME record (asyncio 3.11's
    # create_task(name=) also names after creating; 3.12 and later pass the name to the loop)
    renamed = asyncio.create_task(asyncio.sleep(0))
    renamed.set_name("renamed")
    await renamed
    forever = asyncio.create_task(sleeps_forever(), name="cancelled")
    await asyncio.sleep(0)
    forever.cancel()                      # also cancels its timer
    try:
        await forever
    except asyncio.CancelledError:
        pass
    loop.call_later(60, print).cancel()   # a timer cancelled before it fires

    rfd, wfd = os.pipe()
    read_pipe = os.fdopen(rfd, "rb", buffering=0)
    got = asyncio.Event()

    class PipeReader(asyncio.Protocol):
        def data_received(self, data):
            got.set()
    transport, _ = await loop.connect_read_pipe(PipeReader, read_pipe)
    facts["pipe_fd"] = rfd
    os.write(wfd, b"x")
    await got.wait()
    transport.close()
    os.close(wfd)
    await asyncio.sleep(0)

    # Five fds ready in one poll: a loop iteration record carries three of them itself, the
    # other two follow as io_ready records (runtime.probefile, "Loop iterations and ready events").
    pairs = [socket.socketpair() for _ in range(5)]
    all_read = asyncio.Event()

    def on_readable(sock):
        sock.recv(1)
        loop.remove_reader(sock)
        pending.discard(sock)
        if not pending:
            all_read.set()
    pending = {a for a, _ in pairs}
    for a, _ in pairs:
        loop.add_reader(a, on_readable, a)
    await asyncio.sleep(0)                # the next poll registers them, none ready yet
    for _, b in pairs:
        b.send(b"x")
    await all_read.wait()
    facts["burst_fds"] = sorted(a.fileno() for a, _ in pairs)
    for a, b in pairs:
        a.close()
        b.close()

    facts["executor_result"] = await loop.run_in_executor(None, sum, [1, 2, 3])
    await asyncio.create_task(slow(), name="slow")
    server.close()
    await server.wait_closed()

    import warnings                       # here: the line numbers above are in tests
    with warnings.catch_warnings():       # recorded even when the warning itself is filtered
        warnings.simplefilter("ignore")
        never, facts["never_awaited_line"] = returns(), sys._getframe().f_lineno
        del never                         # collected unawaited: one coro_never_awaited record


def run() -> dict:
    facts: dict = {"pid": os.getpid(), "slow_step_ms": SLOW_STEP_MS, "echo_requests": 3}
    facts["probe_path"] = tracing.enable(slow_step_ms=SLOW_STEP_MS)
    runtime.run(main(facts))
    return facts


if __name__ == "__main__":
    facts = run()
    print(json.dumps(facts), flush=True)
    sys.stdin.read()                      # until the reader closes our stdin
