"""A small keep-alive HTTP load generator that remembers when each request went and came back.

``python tests/e2e/http_load.py PORT PATH CONNECTIONS SECONDS OUT``: CONNECTIONS connections,
each with one request in flight, for SECONDS or until SIGTERM; it prints "running" once every
connection has had a response; OUT gets, per connection, the monotonic ns at
which each request was sent and its response fully received (``CLOCK_MONOTONIC`` is one clock
for every process on the host, so these compare with the edges a collector reports). wrk is
faster but cannot say which requests fell inside a window; one selector loop of raw sockets
costs some microseconds a request, far less than the server it loads.
"""
from __future__ import annotations

import json
import selectors
import signal
import socket
import sys
import time


def run(port: int, path: str, connections: int, seconds: float) -> list[list[tuple[int, int]]]:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        conns.append({"sock": s, "buf": b"", "sent": 0, "log": []})
        sel.register(s, selectors.EVENT_READ, i)
    deadline = [time.monotonic() + seconds]
    signal.signal(signal.SIGTERM, lambda *_: deadline.__setitem__(0, 0))
    started = set()
    for c in conns:
        c["sent"] = time.monotonic_ns()
        c["sock"].send(request)
    response_len = None
    open_conns = connections
    while open_conns:
        for key, _ in sel.select(timeout=1.0):
            c = conns[key.data]
            data = c["sock"].recv(65536)
            if not data:
                raise SystemExit("the server closed a connection")
            c["buf"] += data
            if response_len is None:
                head, sep, _ = c["buf"].partition(b"\r\n\r\n")
                if not sep:
                    continue
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                response_len = len(head) + 4 + length
            while len(c["buf"]) >= response_len:
                now = time.monotonic_ns()
                c["buf"] = c["buf"][response_len:]
                c["log"].append((c["sent"], now))
                if len(started) < connections:
                    started.add(key.data)
                    if len(started) == connections:
                        print("running", flush=True)
                if time.monotonic() < deadline[0]:
                    c["sent"] = time.monotonic_ns()
                    c["sock"].send(request)
                else:
                    sel.unregister(c["sock"])
                    c["sock"].close()
                    open_conns -= 1
    return [c["log"] for c in conns]


if __name__ == "__main__":
    port, path, n, seconds, out = sys.argv[1:6]
    logs = run(int(port), path, int(n), float(seconds))
    with open(out, "w") as f:
        json.dump(logs, f)
