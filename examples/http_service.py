"""A small HTTP/1.1 keep-alive service written with asyncio protocols: the demo's patient.

It answers every request with a short text body, keeps connections open (HTTP/1.1 default),
and runs on the coroscope runtime, stock asyncio or uvloop: ``--loop`` or ``COROSCOPE_LOOP``.
With ``--mark-requests`` (or ``COROSCOPE_MARK_REQUESTS=1``) each request is wrapped in
``runtime.request(...)`` when the runtime offers it, so per-request tools can attribute work.

It prints ``listening on 127.0.0.1:PORT`` once it accepts connections (``--port 0`` picks a
free port), which is how coroscope and the tests find it.

Planted regressions (``examples/regressions``) reuse this service through ``Plant``: hooks
called at connection and request time, so a regression is a few lines, not a second server.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

BODY = b"hello from coroscope\n"


class Plant:
    """Hooks a planted regression overrides; the clean service does nothing in them."""

    name = "clean"

    def on_connection(self) -> None:
        pass

    def on_request(self, connection_requests: int) -> None:
        pass


def _request_marker(enabled: bool):
    """runtime.request if asked for and available, else a no-op context manager factory."""
    if enabled:
        try:
            import runtime
            marker = getattr(runtime, "request", None)
            if marker is not None:
                return marker
        except ImportError:
            pass
    return lambda name: contextlib.nullcontext()


class HttpProtocol(asyncio.Protocol):
    """One keep-alive connection: parse complete requests from the buffer, answer each."""

    def __init__(self, plant: Plant, mark):
        self.plant = plant
        self.mark = mark
        self.buffer = bytearray()
        self.transport = None
        self.requests = 0  # requests answered on this connection

    def connection_made(self, transport):
        self.transport = transport
        self.plant.on_connection()

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            lines = head.split(b"\r\n")
            body_len = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    body_len = int(value.strip() or 0)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if len(self.buffer) < end + 4 + body_len:
                return
            del self.buffer[: end + 4 + body_len]
            parts = lines[0].split(b" ")
            path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
            with self.mark(f"GET {path}"):
                self.respond(close)
            if close:
                self.transport.close()
                return

    def respond(self, close: bool) -> None:
        self.requests += 1
        self.plant.on_request(self.requests)
        header = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n"
            % (len(BODY), b"Connection: close\r\n" if close else b"")
        )
        self.transport.write(header + BODY)


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    """The event loop by name: runtime, asyncio or uvloop."""
    if name == "runtime":
        import runtime
        return runtime.new_event_loop()
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    if name == "asyncio":
        # a stock selector loop, made through a fresh stock policy (whatever policy is installed)
        # so that coroscope's tracepoints, which hook the policies, see its tasks
        return asyncio.DefaultEventLoopPolicy().new_event_loop()
    raise SystemExit(f"http_service: unknown loop {name!r} (runtime, asyncio, uvloop)")


async def serve(host: str, port: int, plant: Plant, mark_requests: bool, backlog: int) -> None:
    loop = asyncio.get_running_loop()
    mark = _request_marker(mark_requests)
    server = await loop.create_server(lambda: HttpProtocol(plant, mark), host, port, backlog=backlog)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on {host}:{bound} loop={os.environ.get('_HTTP_SERVICE_LOOP')} plant={plant.name}",
          flush=True)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    try:
        await stop
    finally:
        server.close()
        await server.wait_closed()


def main(argv: list[str] | None = None, plant: Plant | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", default=os.environ.get("COROSCOPE_LOOP") or "asyncio",
                        choices=["runtime", "asyncio", "uvloop"])
    parser.add_argument("--mark-requests", action="store_true",
                        default=os.environ.get("COROSCOPE_MARK_REQUESTS") == "1")
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args(argv)
    os.environ["_HTTP_SERVICE_LOOP"] = args.loop
    loop = new_loop(args.loop)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(args.host, args.port, plant or Plant(), args.mark_requests,
                                      args.backlog))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
