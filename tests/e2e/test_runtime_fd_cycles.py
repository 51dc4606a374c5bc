"""1,000 lifetimes of a runtime loop leave the process's fds exactly where they began."""
from __future__ import annotations

import asyncio
import os
import threading

import runtime

CYCLES = 1000


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


def one_cycle() -> None:
    loop = runtime.new_event_loop()
    try:
        async def scene():
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            woken = loop.create_future()
            thread = threading.Thread(target=loop.call_soon_threadsafe, args=(woken.set_result, 1))
            thread.start()
            assert await woken == 1
            thread.join()
            assert await loop.run_in_executor(None, sum, (1, 2)) == 3
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()

        loop.run_until_complete(scene())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def test_a_thousand_loop_lifetimes_leave_no_fd_behind():
    before = sorted(os.listdir("/proc/self/fd"))
    for _ in range(CYCLES):
        one_cycle()
    after = sorted(os.listdir("/proc/self/fd"))
    assert after == before
