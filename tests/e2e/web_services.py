"""Real web services started the way their users start them, for the e2e tests.

The apps (tests/e2e/userapps) import nothing of coroscope and print nothing of their own; the
servers are the installed uvicorn, hypercorn, aiohttp and gunicorn, run from this environment's
bin directory with ``COROSCOPE_TRACE=1`` and nothing else: the start-up hook the distribution
installs does the rest. They are stopped as supervisors stop them, with SIGTERM (SIGKILL if
that is ignored).
"""
from __future__ import annotations

import collections
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from diag.started import Output

APPS = Path(__file__).resolve().parent / "userapps"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(server: str, port: int, app: str = "fastapi_items") -> list[str]:
    """The command line a user types, for each server."""
    if server == "uvicorn":
        return [str(BIN / "uvicorn"), f"{app}:app", "--port", str(port), "--log-level", "warning"]
    if server == "hypercorn":
        return [str(BIN / "hypercorn"), "starlette_items:app", "--bind", f"127.0.0.1:{port}"]
    if server == "aiohttp":
        return [sys.executable, "-m", "aiohttp.web", "-H", "127.0.0.1", "-P", str(port),
                "aiohttp_items:init"]
    if server == "gunicorn":
        return [str(BIN / "gunicorn"), "-k", "uvicorn.workers.UvicornWorker", "-w", "2",
                "-b", f"127.0.0.1:{port}", f"{app}:app"]
    if server == "gunicorn-aiohttp":
        return [str(BIN / "gunicorn"), "-k", "aiohttp.GunicornWebWorker", "-w", "2",
                "-b", f"127.0.0.1:{port}", "aiohttp_items:make_app"]
    raise ValueError(server)


class Service:
    def __init__(self, server: str, app: str = "fastapi_items", env: dict | None = None,
                 args: tuple[str, ...] = ()):
        self.server = server
        self.port = free_port()
        self.cmd = command(server, self.port, app) + list(args)
        inherited = dict(os.environ, COROSCOPE_TRACE="1")
        inherited.pop("COROSCOPE_LOOP", None)        # the test's own env says which loop, if any
        env = inherited | (env or {})
        # a file, not a pipe (as for every command coroscope starts): under load the servers'
        # access logs (aiohttp's goes to stderr) would fill a pipe nobody reads and block the
        # server in write()
        self.output = Output()
        self.proc = subprocess.Popen(self.cmd, cwd=APPS, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.output, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.cmd} exited with {self.proc.returncode}: "
                                     + "\n".join(self.output.tail()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{self.cmd} did not listen within {timeout} s")

    def get(self, paths: list[str]) -> list[int]:
        """GET each path on one keep-alive connection; the status codes."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        statuses = []
        try:
            for path in paths:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                statuses.append(resp.status)
        finally:
            conn.close()
        return statuses

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.output.close()
        return self.proc.returncode


def ended_request_names(pids: list[int], expect_total: int, timeout: float = 20.0) -> collections.Counter:
    """Names of the requests that ended in these processes' probes (a request ended with a new
    name takes it: REQUEST_END's name), waiting, bounded, until ``expect_total`` have ended (the
    end record is written just after the response's last byte left)."""
    from diag import probe
    deadline = time.monotonic() + timeout
    while True:
        names: collections.Counter = collections.Counter()
        for pid in pids:
            with probe.attach(pid) as reader:
                begun = {}
                for rec in reader.poll():
                    if rec.kind == "request_begin":
                        begun[rec.request] = rec.fields.get("name", "")
                    elif rec.kind == "request_end":
                        names[rec.fields.get("name") or begun.get(rec.request, "?")] += 1
        if sum(names.values()) >= expect_total or time.monotonic() > deadline:
            return names
        time.sleep(0.1)
