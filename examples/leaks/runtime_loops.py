"""One full lifecycle of a coroscope runtime loop per cycle: the Glommio check, the right way round.

Each cycle creates a runtime loop (epoll fd, wakeup eventfd, signal socketpair), wakes it from
another thread through ``call_soon_threadsafe`` (the eventfd path), runs a coroutine that uses
a socket pair through the loop's transports, and closes the loop. Nothing may be left:

    coroscope leaks --cycles 1000 --warmup 10 -- examples/leaks/runtime_loops.py
"""
from __future__ import annotations

import asyncio
import socket
import threading

import runtime


async def _exchange() -> bytes:
    loop = asyncio.get_running_loop()
    woken = loop.create_future()
    waker = threading.Thread(target=loop.call_soon_threadsafe, args=(woken.set_result, None))
    waker.start()
    await woken
    waker.join()
    a, b = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=a)
    b.sendall(b"ping\n")
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    b.close()
    return line


def cycle() -> None:
    loop = runtime.new_event_loop()
    try:
        assert loop.run_until_complete(_exchange()) == b"ping\n"
    finally:
        loop.close()
