"""A small order service with the problems real services have: the patient of ``make demo``.

``GET /orders/{n}`` answers an order of five items with their prices, which come from an
inventory service. The inventory runs in the same process, on a loopback socket, and answers
each query after a short wait (a slow dependency, as a database or a remote API is); it is
reached over a socket pair, so the service's only listening socket is its own. Written
as many services are, it has four problems, each a few lines a reviewer lets through:

  * every 40th request refreshes the exchange rates with a synchronous call (``time.sleep``
    standing in for ``requests.get``): the event loop stops for 200 ms and every connection
    waits;
  * each connection reports to a metrics collector that is down; the socket opened for it is
    kept alive by the exception stored in ``recent_errors`` (its traceback holds the frame)
    and never closed: one fd leaked per connection;
  * the inventory client reads with ``loop.sock_recv`` per message, which registers a reader
    and removes it again on every read (two epoll_ctl per message on asyncio);
  * the prices are fetched one item at a time (an N+1 await on the slow dependency).

``--fixed`` runs the same service with each fixed: the refresh in a thread (run_in_executor)
by a background task, off every request's path,
the socket closed on the error path and only the message kept, the inventory read through a
stream (the transport keeps its reader registered), and one query for all the items.

The service prints nothing: coroscope finds it from the socket it listens on.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time

ITEMS_PER_ORDER = 5
INVENTORY_DELAY_S = 0.002      # each inventory answer waits this long: a slow dependency
REFRESH_EVERY = 40             # requests between exchange-rate refreshes
METRICS_ADDRESS = ("127.0.0.1", 9)   # the discard port: nothing listens, connect is refused


def _refresh_rates_sync() -> dict:
    time.sleep(0.2)            # a synchronous HTTP client call to the rates provider
    return {"EUR": 1.0}


# ------------------------------------------------------------------------------ the inventory

async def _inventory_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    """The dependency: queries ``[id, [items]]`` one per line, each answered ``[id, {item:
    price}]`` after a delay, concurrently (as a database serves several queries at once)."""
    async def answer(query_id, items):
        await asyncio.sleep(INVENTORY_DELAY_S)
        writer.write(json.dumps([query_id, {str(i): 10 + i for i in items}]).encode() + b"\n")

    pending = set()
    while line := await reader.readline():
        task = asyncio.create_task(answer(*json.loads(line)))
        pending.add(task)
        task.add_done_callback(pending.discard)
    writer.close()


class SockRecvInventory:
    """The planted client: sock_sendall / sock_recv on a raw socket, one item per query."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.lock = asyncio.Lock()

    async def price(self, item: int) -> int:
        loop = asyncio.get_running_loop()
        async with self.lock:
            await loop.sock_sendall(self.sock, json.dumps([0, [item]]).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                data += await loop.sock_recv(self.sock, 4096)
        return json.loads(data)[1][str(item)]

    async def prices(self, items: list[int]) -> dict[int, int]:
        return {i: await self.price(i) for i in items}


class StreamInventory:
    """The fixed client: a stream (the reader stays registered), one query for every item,
    queries multiplexed by id so concurrent requests do not queue behind each other."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.waiting: dict[int, asyncio.Future] = {}
        self.next_id = 0
        self.dispatcher = asyncio.create_task(self._dispatch())

    async def _dispatch(self) -> None:
        while line := await self.reader.readline():
            query_id, answer = json.loads(line)
            self.waiting.pop(query_id).set_result(answer)

    async def prices(self, items: list[int]) -> dict[int, int]:
        self.next_id += 1
        answer = self.waiting[self.next_id] = asyncio.get_running_loop().create_future()
        self.writer.write(json.dumps([self.next_id, items]).encode() + b"\n")
        prices = await answer
        return {i: prices[str(i)] for i in items}


# --------------------------------------------------------------------------------- the service

class Shop:
    def __init__(self, inventory, fixed: bool):
        self.inventory = inventory
        self.fixed = fixed
        self.requests = 0
        self.rates = {"EUR": 1.0}
        self.recent_errors: list = []

    async def report_connection(self) -> None:
        """Tell the metrics collector about a new connection (it is down)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, METRICS_ADDRESS)
            sock.close()
        except OSError as exc:
            if self.fixed:
                sock.close()
                self.recent_errors = (self.recent_errors + [str(exc)])[-10:]
            else:
                self.recent_errors.append(exc)   # its traceback keeps `sock` open

    async def refresh_rates(self) -> None:
        """The fix: rates refreshed in a thread, in the background, never on a request's path."""
        loop = asyncio.get_running_loop()
        while True:
            self.rates = await loop.run_in_executor(None, _refresh_rates_sync)
            await asyncio.sleep(1.0)

    async def order(self, n: int) -> bytes:
        self.requests += 1
        if not self.fixed and self.requests % REFRESH_EVERY == 0:
            self.rates = _refresh_rates_sync()
        items = [n * 10 + i for i in range(ITEMS_PER_ORDER)]
        prices = await self.inventory.prices(items)
        return json.dumps({"order": n, "total": sum(prices.values()) * self.rates["EUR"]}).encode()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        await self.report_connection()
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                parts = head.split(b" ", 2)
                path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
                status, body = b"404 Not Found", b"not found\n"
                pieces = path.strip("/").split("/")
                if len(pieces) == 2 and pieces[0] == "orders" and pieces[1].isdigit():
                    status, body = b"200 OK", await self.order(int(pieces[1]))
                writer.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def serve(host: str, port: int, fixed: bool) -> None:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    backend = asyncio.create_task(_inventory_connection(*await asyncio.open_connection(sock=theirs)))
    if fixed:
        inventory = StreamInventory(*await asyncio.open_connection(sock=ours))
    else:
        ours.setblocking(False)
        inventory = SockRecvInventory(ours)
    shop = Shop(inventory, fixed)
    refresher = asyncio.create_task(shop.refresh_rates()) if fixed else None
    server = await asyncio.start_server(shop.connection, host, port, backlog=4096)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    try:
        await stop
    finally:
        server.close()
        backend.cancel()
        if refresher is not None:
            refresher.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--fixed", action="store_true", help="the same service with its problems fixed")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.fixed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
