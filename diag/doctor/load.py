"""Driving load at a service: the built-in client, and wrk where it is installed.

Why a client of our own when wrk exists: wrk runs for a duration and reports a distribution.
coroscope also needs load it can *step*: open C connections and warm them, then send exactly N
requests while a syscall counter is armed, then close the connections and let the fd counter
look, then do it again. Exact counts need exact request numbers and quiet boundaries, so the
built-in client takes commands one at a time and answers each when it is finished.

The client runs in its own process (on uvloop when importable) so its own work never lands in
the target's numbers and never competes for the target's GIL. The parent talks to it through
``LoadProcess``: one JSON command per line on the child's stdin, one JSON answer per line on
its stdout.

Commands (child side, ``serve_commands``):
    {"op": "connect", "n": C}                 open C keep-alive connections
    {"op": "requests", "per_connection": R}   R requests on each open connection, sequentially
                                              per connection, connections concurrently
    {"op": "run", "duration": S}              requests on every connection until S seconds pass
    {"op": "close"}                           close every connection (the client side)
    {"op": "quit"}
Answers carry ``count`` (requests answered, whatever the status), ``errors`` (answers that are
not 2xx or 3xx, and connections lost) and, for request phases, ``statuses`` (status code ->
answers), the latency summary and the timeline. The requests are GETs of the paths the client
was given (``--path`` / ``--load URL``), each connection going round them in turn; a 404 or a
500 is an error counted in the answer, never the end of the phase.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: coroscope-load\r\n\r\n"
TIMELINE_BUCKET_S = 0.1


def http_request(path: str = "/", host: str = "127.0.0.1") -> bytes:
    """One keep-alive GET of ``path`` (the path as given: a query string is kept)."""
    if not path.startswith("/"):
        path = "/" + path
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: coroscope-load\r\n\r\n"
            .encode("latin-1"))


# ----------------------------------------------------------------------------- child side

class _Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request in flight at a time. A request's
    answer is its status code, or 0 when the connection was lost first."""

    requests_bytes = [REQUEST]

    def __init__(self):
        self.next = 0
        self.transport = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        match = re.search(rb"(?i)content-length:\s*(\d+)", self.buffer[:end])
        length = int(match.group(1)) if match else 0
        if len(self.buffer) < end + 4 + length:
            return
        match = re.match(rb"HTTP/1\.[01] (\d{3})", self.buffer)
        status = int(match.group(1)) if match else 0     # before the buffer moves under it
        del self.buffer[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(0)
        if not self.closed.done():
            self.closed.set_result(None)

    async def request(self) -> int:
        if self.transport is None or self.transport.is_closing():
            return 0
        self.waiter = asyncio.get_running_loop().create_future()
        requests = self.requests_bytes
        self.transport.write(requests[self.next % len(requests)])
        self.next += 1
        return await self.waiter


class _EchoClient(_Client):
    """A TCP echo connection: a request is 64 bytes out and the same 64 bytes back."""

    requests_bytes = [b"x" * 64]

    def data_received(self, data):
        self.buffer += data
        if len(self.buffer) >= 64:
            del self.buffer[:64]
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(200)


def summarize(samples: list[tuple[float, float]]) -> dict:
    """Latency summary and a 100 ms timeline from (start offset s, latency s) samples."""
    lat = sorted(s[1] for s in samples)

    def pct(sorted_values, q):
        if not sorted_values:
            return None
        return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]

    buckets: dict[int, list[float]] = {}
    for start, latency in samples:
        buckets.setdefault(int(start / TIMELINE_BUCKET_S), []).append(latency)
    timeline = []
    for index in sorted(buckets):
        values = sorted(buckets[index])
        timeline.append({"t": round(index * TIMELINE_BUCKET_S, 3), "count": len(values),
                         "p50_ms": pct(values, 0.5) * 1e3, "p99_ms": pct(values, 0.99) * 1e3,
                         "max_ms": values[-1] * 1e3})
    return {
        "p50_ms": None if not lat else pct(lat, 0.5) * 1e3,
        "p90_ms": None if not lat else pct(lat, 0.9) * 1e3,
        "p99_ms": None if not lat else pct(lat, 0.99) * 1e3,
        "max_ms": None if not lat else lat[-1] * 1e3,
        "timeline": timeline,
    }


class _Driver:
    def __init__(self, host: str, port: int, mode: str = "http", paths: list[str] | None = None):
        self.host, self.port = host, port
        if mode == "echo":
            self.client_class = _EchoClient
        else:
            requests = [http_request(p) for p in (paths or ["/"])]
            self.client_class = type("_PathsClient", (_Client,), {"requests_bytes": requests})
        self.clients: list[_Client] = []
        self.t0 = time.perf_counter()  # timeline origin: the first command

    async def connect(self, n: int) -> dict:
        loop = asyncio.get_running_loop()
        errors = 0
        for _ in range(n):
            try:
                _, client = await loop.create_connection(self.client_class, self.host, self.port)
                self.clients.append(client)
            except OSError:
                errors += 1
        return {"count": len(self.clients), "errors": errors}

    async def _phase(self, per_connection: int | None, deadline: float | None) -> dict:
        samples: list[tuple[float, float]] = []
        errors = 0
        statuses: dict[str, int] = {}

        async def one(client: _Client):
            nonlocal errors
            done = lost_in_a_row = 0
            while (per_connection is None or done < per_connection) and (
                    deadline is None or time.perf_counter() < deadline):
                start = time.perf_counter()
                status = await client.request()
                end = time.perf_counter()
                if not status:
                    # the server closed the connection (as servers do after a 500): a client
                    # opens another and asks again, as wrk does; one that keeps losing is done
                    errors += 1
                    lost_in_a_row += 1
                    client = await self._replace(client) if lost_in_a_row <= 3 else None
                    if client is None:
                        return
                    continue
                done += 1
                lost_in_a_row = 0
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                samples.append((start - self.t0, end - start))
                if not 200 <= status < 400:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(c) for c in self.clients))
        elapsed = time.perf_counter() - started
        return {"count": len(samples), "errors": errors, "elapsed_s": elapsed,
                "requests_per_s": len(samples) / elapsed if elapsed > 0 else 0.0,
                "statuses": statuses, **summarize(samples)}

    async def _replace(self, client: _Client) -> _Client | None:
        try:
            _, fresh = await asyncio.get_running_loop().create_connection(
                self.client_class, self.host, self.port)
        except OSError:
            return None
        self.clients[self.clients.index(client)] = fresh
        client.transport.close()
        return fresh

    async def close(self) -> dict:
        clients, self.clients = self.clients, []
        for client in clients:
            client.transport.close()
        await asyncio.gather(*(c.closed for c in clients))
        return {"count": len(clients), "errors": 0}

    async def handle(self, command: dict) -> dict:
        op = command.get("op")
        if op == "connect":
            return await self.connect(int(command["n"]))
        if op == "requests":
            return await self._phase(int(command["per_connection"]), None)
        if op == "run":
            return await self._phase(None, time.perf_counter() + float(command["duration"]))
        if op == "close":
            return await self.close()
        return {"error": f"unknown op {op!r}"}


async def serve_commands(host: str, port: int, mode: str, paths: list[str] | None = None) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    driver = _Driver(host, port, mode, paths)
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        if command.get("op") == "quit":
            await driver.close()
            break
        answer = await driver.handle(command)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def _child_main(argv: list[str]) -> int:
    host, port, mode = argv[0], int(argv[1]), (argv[2] if len(argv) > 2 else "http")
    paths = json.loads(argv[3]) if len(argv) > 3 else None
    try:
        import uvloop
        new_loop = uvloop.new_event_loop
    except ImportError:
        new_loop = asyncio.new_event_loop
    loop = new_loop()
    try:
        loop.run_until_complete(serve_commands(host, port, mode, paths))
    finally:
        loop.close()
    return 0


# ---------------------------------------------------------------------------- parent side

class LoadError(Exception):
    pass


class LoadProcess:
    """The built-in client in its own process; each method returns the child's answer."""

    def __init__(self, host: str, port: int, mode: str = "http", paths: list[str] | None = None):
        """mode: "http" (GETs of ``paths``, default "/", on keep-alive connections) or "echo"
        (64-byte messages)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "diag.doctor.load", host, str(port), mode,
             json.dumps(list(paths or ["/"]))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                filter(None, [_project_root(), os.environ.get("PYTHONPATH")]))},
        )

    def _ask(self, command: dict) -> dict:
        if self.proc.poll() is not None:
            raise LoadError(f"the load client exited with status {self.proc.returncode}")
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise LoadError("the load client exited without answering")
        answer = json.loads(line)
        if "error" in answer:
            raise LoadError(answer["error"])
        return answer

    def connect(self, n: int) -> dict:
        return self._ask({"op": "connect", "n": n})

    def requests(self, per_connection: int) -> dict:
        return self._ask({"op": "requests", "per_connection": per_connection})

    def run(self, duration: float) -> dict:
        return self._ask({"op": "run", "duration": duration})

    def close_connections(self) -> dict:
        return self._ask({"op": "close"})

    def quit(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.quit()


def _project_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -------------------------------------------------------------------------------------- wrk

@dataclass
class WrkResult:
    connections: int
    duration_s: float
    requests: int
    requests_per_s: float
    errors: int
    percentiles_ms: dict[str, float] = field(default_factory=dict)  # "50", "75", "90", "99"


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str, connections: int, duration: float) -> WrkResult:
    """Read wrk's --latency text output: requests, rate, errors, latency percentiles."""
    percentiles = {m.group(1): _ms(m.group(2))
                   for m in re.finditer(r"^\s+(\d+)%\s+(\S+)\s*$", output, re.M)}
    requests = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = 0
    for m in re.finditer(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(g) for g in m.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    if not requests or not rate:
        raise ValueError("wrk printed no summary: " + output.strip().splitlines()[-1:][0]
                         if output.strip() else "wrk printed nothing")
    return WrkResult(connections, duration, int(requests.group(1)), float(rate.group(1)), errors,
                     percentiles)


def run_wrk(url: str, connections: int, duration: float, threads: int = 2,
            timeout_s: float = 5.0) -> WrkResult:
    threads = max(1, min(threads, connections))
    cmd = ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
           "--timeout", f"{timeout_s:g}s", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise LoadError(f"wrk failed: {(proc.stderr or proc.stdout).strip()[:200]}")
    return parse_wrk(proc.stdout, connections, duration)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
