"""A small Starlette app under uvicorn, with coroscope's ASGI middleware (the one line below).

GET /work makes exactly 2 getppid calls and one write to /dev/null per request, so
``coroscope syscalls -- python examples/asgi_app.py --requests 50`` can be checked exactly:
the app serves on 127.0.0.1, sends itself ``--requests`` requests over one keep-alive
connection from a thread, then shuts down.
"""
from __future__ import annotations

import argparse
import http.client
import os
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from diag.middleware import CoroscopeASGIMiddleware

DEVNULL = os.open(os.devnull, os.O_WRONLY)


async def work(request):
    os.getppid()
    os.getppid()
    os.write(DEVNULL, b"x")
    return PlainTextResponse("ok")


app = CoroscopeASGIMiddleware(Starlette(routes=[Route("/work", work)]))   # the one line of setup


def client(port: int, n: int, server: uvicorn.Server, start_delay: float) -> None:
    while not server.started:
        time.sleep(0.01)
    time.sleep(start_delay)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(n):
        conn.request("GET", "/work")
        conn.getresponse().read()
    conn.close()
    server.should_exit = True


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="0: pick a free port")
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--start-delay", type=float, default=0.5)
    args = p.parse_args(argv)
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, loop="none", lifespan="off")
    server = uvicorn.Server(config)
    threading.Thread(target=client, args=(port, args.requests, server, args.start_delay), daemon=True).start()
    server.run(sockets=[sock])
    print(f"served {args.requests} requests on 127.0.0.1:{port}")


if __name__ == "__main__":
    main()
