"""An echo server written with ``loop.sock_accept`` / ``loop.sock_recv`` / ``loop.sock_sendall``,
as asyncio's documentation shows them: the program on which ``coroscope syscalls`` must name the
re-registration pattern (``--style sock``), and the same echo served by a Protocol (``--style
protocol``), on which it must name neither re-registration nor an EAGAIN storm.

``sock_recv`` reads first and, when the read fails with EAGAIN, adds a reader (epoll_ctl ADD),
waits, and removes it when the read is done (epoll_ctl DEL): two epoll_ctl and one failed read
per request whenever the next message is not already there, which with a client that waits for
each reply is nearly always. A Protocol's transport registers its reader once per connection and
reads only when the poll says the socket is ready.

``--style drain`` registers a reader once per connection (``loop.add_reader``) and, when it is
ready, reads until the read fails: one EAGAIN for every message, the EAGAIN-storm pattern
without re-registration.

Each message is one request (``runtime.request``). ``--get-running-loop N`` makes each request
call ``asyncio.get_running_loop()`` N times, as framework code does (a getpid each on CPython
3.11). The load is ``syscall_echo.py``'s client, run as a separate process (its syscalls are not
the server's): one 64-byte message in flight per connection, for ``--seconds``, each sent
``--think-ms`` after the last reply; the server exits
when the client is done and prints what was served.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

from runtime.requests import request

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "syscall_echo.py")


async def echo_with_sock_calls(loop, conn: socket.socket, get_running_loop: int) -> None:
    with conn:
        while True:
            data = await loop.sock_recv(conn, 4096)
            if not data:
                return
            with request("echo"):
                for _ in range(get_running_loop):
                    asyncio.get_running_loop()
                await loop.sock_sendall(conn, data)


def drain_until_eagain(loop, conn: socket.socket, get_running_loop: int) -> None:
    """Registered once per connection with add_reader: on readiness, read until the read fails."""
    def on_readable() -> None:
        while True:
            try:
                data = conn.recv(4096)
            except BlockingIOError:
                return
            if not data:
                loop.remove_reader(conn)
                conn.close()
                return
            with request("echo"):
                for _ in range(get_running_loop):
                    asyncio.get_running_loop()
                conn.sendall(data)
    loop.add_reader(conn, on_readable)


class Echo(asyncio.Protocol):
    def __init__(self, get_running_loop: int):
        self.get_running_loop = get_running_loop

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        with request("echo"):
            for _ in range(self.get_running_loop):
                asyncio.get_running_loop()
            self.transport.write(data)


async def serve(args) -> None:
    loop = asyncio.get_running_loop()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    handlers: set[asyncio.Task] = set()
    server = None

    async def accept() -> None:
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if args.style == "drain":
                drain_until_eagain(loop, conn, args.get_running_loop)
                continue
            task = loop.create_task(echo_with_sock_calls(loop, conn, args.get_running_loop))
            handlers.add(task)
            task.add_done_callback(handlers.discard)

    if args.style in ("sock", "drain"):
        acceptor = loop.create_task(accept())
    else:
        server = await loop.create_server(lambda: Echo(args.get_running_loop), sock=listener)
    await asyncio.sleep(args.start_delay)
    client = await asyncio.create_subprocess_exec(
        sys.executable, CLIENT, "--client", str(port), "--connections", str(args.connections),
        "--seconds", str(args.seconds), "--think-ms", str(args.think_ms), stdout=asyncio.subprocess.PIPE)
    out, _ = await client.communicate()
    if server is not None:
        server.close()
        await server.wait_closed()
    else:
        acceptor.cancel()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(acceptor, *handlers, return_exceptions=True)
        listener.close()
    done, elapsed, _cpu = out.decode().split()[-3:]
    print(f"sock_server style={args.style} loop={type(loop).__module__}.{type(loop).__name__} "
          f"requests={done} seconds={elapsed}", flush=True)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--style", choices=("sock", "drain", "protocol"), default="sock")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--start-delay", type=float, default=0.2)
    p.add_argument("--get-running-loop", type=int, default=0, metavar="N")
    p.add_argument("--think-ms", type=float, default=0.0,
                   help="the client waits this long after each reply (0: as fast as it can)")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(serve(parse()))
