"""A small shop API on aiohttp, with the problems real services have: `make demo`'s patient.

    python -m examples.shop_service --port 0 [--fixed]

Three routes, each with a defect that shows under load, and the fix ``--fixed`` applies:

    GET /orders/{id}   prices the order's lines one after another, each a round trip to the
                       inventory service (an N+1 await on a slow dependency), through
                       loop.sock_sendall / loop.sock_recv on a new raw socket each time, which
                       registers and unregisters the socket with the poller on every call.
                       Fixed: one query for all the lines, on kept-open stream connections.
    GET /avatar/{id}   asks the image CDN for the avatar; the CDN is down, and the error path
                       returns 502 and leaves the socket it opened in the table of CDN
                       connections in flight, which only the success path empties: an fd
                       leaked per call.
                       Fixed: the socket is closed on every path (``with``).
    GET /report        renders the daily report with the warehouse's synchronous client
                       library, whose call takes 150 ms, on the event loop: every other
                       request waits.
                       Fixed: the call runs in the default executor.

The inventory service runs in the same process, on a Unix socket, and answers each price
after 2 ms (a database's latency); the CDN is a Unix socket path nobody listens on. The service
imports nothing of coroscope: doctor finds its port from its listening socket, marks its
requests (aiohttp's routes) and traces it through the start-up hook. It runs on whatever loop
the event loop policy gives (``COROSCOPE_LOOP=runtime`` for the coroscope runtime).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import tempfile
import time

from aiohttp import web

LINES_PER_ORDER = 5
INVENTORY_DELAY_S = 0.002
REPORT_WAREHOUSE_S = 0.15      # the warehouse API's answer time, through a blocking client


# ------------------------------------------------------------------ the inventory dependency
def price_of(sku: int) -> int:
    return 100 + sku % 17


async def inventory_server(path: str) -> asyncio.AbstractServer:
    """One query per line: SKUs separated by spaces; the answer is their prices, in order,
    after the database's latency (once per query, however many SKUs it asks for)."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        while line := await reader.readline():
            await asyncio.sleep(INVENTORY_DELAY_S)
            prices = [price_of(int(sku)) for sku in line.split()]
            writer.write((" ".join(map(str, prices)) + "\n").encode())
            await writer.drain()
        writer.close()
    return await asyncio.start_unix_server(answer, path)


async def price_planted(inventory_path: str, sku: int) -> int:
    """One price, one connection, loop.sock_* calls: re-registers the socket on every call."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, inventory_path)
        await loop.sock_sendall(sock, f"{sku}\n".encode())
        answer = await loop.sock_recv(sock, 64)
        return int(answer)
    finally:
        sock.close()


class Inventory:
    """The fixed client: kept-open stream connections (a small pool, opened as needed), one
    query for all the SKUs an order needs."""

    def __init__(self, path: str, size: int = 16):
        self.path = path
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(size)

    async def prices(self, skus: list[int]) -> list[int]:
        async with self.slots:
            conn = self.idle.pop() if self.idle else await asyncio.open_unix_connection(self.path)
            reader, writer = conn
            writer.write((" ".join(map(str, skus)) + "\n").encode())
            answer = await reader.readline()
            self.idle.append(conn)
            return [int(p) for p in answer.split()]


# ----------------------------------------------------------------------------------- routes
async def order_planted(request: web.Request) -> web.Response:
    order = int(request.match_info["id"])
    total = 0
    for line in range(LINES_PER_ORDER):                     # N+1: one round trip per line
        total += await price_planted(request.app["inventory_path"], order * 10 + line)
    return web.json_response({"order": order, "total": total})


async def order_fixed(request: web.Request) -> web.Response:
    order = int(request.match_info["id"])
    inventory: Inventory = request.app["inventory"]
    prices = await inventory.prices([order * 10 + line for line in range(LINES_PER_ORDER)])
    return web.json_response({"order": order, "total": sum(prices)})


_cdn_in_flight: dict[int, socket.socket] = {}    # CDN connections not yet answered


def fetch_avatar_planted(cdn_path: str) -> bytes | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _cdn_in_flight[sock.fileno()] = sock
    try:
        sock.connect(cdn_path)
    except OSError:
        return None                       # the error path: the socket stays in the table, open
    try:
        return sock.recv(1024)
    finally:
        del _cdn_in_flight[sock.fileno()]
        sock.close()


def fetch_avatar_fixed(cdn_path: str) -> bytes | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(cdn_path)
        except OSError:
            return None
        return sock.recv(1024)


def warehouse_stock_levels() -> bytes:
    """The warehouse's synchronous client library: a blocking call (150 ms) per report."""
    time.sleep(REPORT_WAREHOUSE_S)
    return b"stock levels"


def render_report() -> str:
    return hashlib.sha256(warehouse_stock_levels()).hexdigest()[:16]


def routes(fixed: bool):
    fetch = fetch_avatar_fixed if fixed else fetch_avatar_planted

    async def avatar(request: web.Request) -> web.Response:
        image = fetch(request.app["cdn_path"])
        if image is None:
            return web.Response(status=502, text="the image CDN is down\n")
        return web.Response(body=image, content_type="image/png")

    async def report(request: web.Request) -> web.Response:
        if fixed:
            text = await asyncio.get_running_loop().run_in_executor(None, render_report)
        else:
            text = render_report()                           # blocks the loop
        return web.Response(text=text + "\n")

    return [web.get("/orders/{id}", order_fixed if fixed else order_planted),
            web.get("/avatar/{id}", avatar), web.get("/report", report)]


async def make_app(fixed: bool) -> web.Application:
    app = web.Application()
    folder = tempfile.mkdtemp(prefix="shop-")
    app["inventory_path"] = os.path.join(folder, "inventory.sock")
    app["cdn_path"] = os.path.join(folder, "cdn.sock")       # nobody listens there
    app["inventory"] = Inventory(app["inventory_path"])
    app.add_routes(routes(fixed))

    async def inventory(app):
        server = await inventory_server(app["inventory_path"])
        yield
        server.close()
        await server.wait_closed()
        os.unlink(app["inventory_path"])
        os.rmdir(folder)
    app.cleanup_ctx.append(inventory)
    return app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--fixed", action="store_true", help="the same service with the fixes applied")
    args = parser.parse_args(argv)
    web.run_app(make_app(args.fixed), host=args.host, port=args.port, print=None,
                access_log=None, loop=asyncio.new_event_loop())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
