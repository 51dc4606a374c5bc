"""Continuous profiling: a pprof profile of each exported process every N seconds, pushed to a
Pyroscope server's HTTP ingest API.

Profiles are taken by py-spy from outside (``diag.flame.pyspy``: nothing injected, the target
never paused), one ``py-spy record`` of N seconds after another per process, folded and
encoded as pprof exactly as ``coroscope flame --format pprof`` does (labels: the thread). Each
is sent as ``POST URL/ingest?name=SERVICE.cpu{service=...,pid=...}&from=..&until=..&format=
pprof&sampleRate=..&spyName=coroscope``, the profile in a multipart form field ``profile``
(what Pyroscope's own agents send).

While the server is down
------------------------
A fleet's profiler must not grow without bound or flood its log because a collector is away.
Profiles wait in a bounded queue (``max_queue``; when full the oldest is dropped and counted);
one sender thread retries the oldest with exponential backoff (``BACKOFF_FIRST_S`` doubling up
to ``backoff_max_s``) and says so in ONE warning line per outage, not one per attempt. When the
server answers again the queue drains in order and the next outage gets its own line.
"""
from __future__ import annotations

import collections
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass

from diag.errors import CoroscopeError
from diag.flame import fold, pprof, pyspy

BACKOFF_FIRST_S = 0.5
SEND_TIMEOUT_S = 10.0


@dataclass
class Pushed:
    pid: int
    service: str
    start: float          # unix seconds the profile covers
    end: float
    rate: float
    data: bytes           # gzipped pprof


def ingest_url(base: str, item: Pushed) -> str:
    name = f"{item.service}.cpu{{service={item.service},pid={item.pid}}}"
    query = urllib.parse.urlencode({"name": name, "from": int(item.start),
                                    "until": max(int(item.end), int(item.start) + 1),
                                    "format": "pprof", "sampleRate": int(item.rate),
                                    "spyName": "coroscope"})
    return f"{base.rstrip('/')}/ingest?{query}"


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"; "
            f"filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def check_url(url: str) -> None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CoroscopeError(f"--profile-to {url}: give the server's http(s) URL")


class Pusher:
    def __init__(self, url: str, every_s: float = 10.0, rate: float = 100.0,
                 max_queue: int = 32, backoff_max_s: float = 30.0, warn=None):
        check_url(url)
        self.url = url
        self.every_s = every_s
        self.rate = rate
        self.queue: collections.deque[Pushed] = collections.deque()
        self.max_queue = max_queue
        self.backoff_max_s = backoff_max_s
        self.sent = 0
        self.dropped = 0
        self.warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._recorders: dict[int, threading.Thread] = {}
        self._sender = threading.Thread(target=self._send_loop, name="coroscope-push",
                                        daemon=True)
        self._sender.start()

    # ------------------------------------------------------------------ profiles in
    def watch(self, pid: int, service: str) -> None:
        """Profile ``pid`` every ``every_s`` until it exits (idempotent)."""
        t = self._recorders.get(pid)
        if t is not None and t.is_alive():
            return
        t = threading.Thread(target=self._record_loop, args=(pid, service), daemon=True,
                             name=f"coroscope-profile-{pid}")
        self._recorders[pid] = t
        t.start()

    def _record_loop(self, pid: int, service: str) -> None:
        while not self._stop.is_set():
            start = time.time()
            try:
                res = pyspy.record(pid, None, rate=self.rate,
                                   stop_when=lambda: self._stop.is_set()
                                   or time.time() - start >= self.every_s)
            except CoroscopeError as exc:
                if os.path.exists(f"/proc/{pid}"):
                    self.warn(f"coroscope: warning: cannot profile pid {pid}: {exc}")
                return
            profile = fold.profile_from_collapsed(
                res.stacks, "cpu", "py-spy", rate_hz=self.rate, duration_s=round(res.elapsed, 3),
                target=f"pid {pid} ({service})")
            if profile.stacks:
                self.put(Pushed(pid, service, start, time.time(), self.rate,
                                pprof.encode(profile, int(start * 1e9))))
            if res.target_exited:
                return

    def put(self, item: Pushed) -> None:
        with self._cond:
            if len(self.queue) >= self.max_queue:
                self.queue.popleft()
                self.dropped += 1
            self.queue.append(item)
            self._cond.notify()

    # ------------------------------------------------------------------ profiles out
    def _send_loop(self) -> None:
        backoff = BACKOFF_FIRST_S
        down = False
        while not self._stop.is_set():
            with self._cond:
                while not self.queue and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                item = self.queue[0]
            problem = self._send(item)
            if problem is None:
                with self._cond:
                    if self.queue and self.queue[0] is item:
                        self.queue.popleft()
                self.sent += 1
                backoff, down = BACKOFF_FIRST_S, False
                continue
            if not down:
                down = True
                self.warn(f"coroscope: warning: cannot push profiles to {self.url} ({problem}); "
                          f"retrying with backoff up to {self.backoff_max_s:g} s, keeping at "
                          f"most {self.max_queue} profiles")
            self._stop.wait(backoff)
            backoff = min(self.backoff_max_s, backoff * 2)

    def _send(self, item: Pushed) -> str | None:
        body, content_type = multipart(item.data)
        req = urllib.request.Request(ingest_url(self.url, item), data=body, method="POST",
                                     headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=SEND_TIMEOUT_S) as resp:
                resp.read()
            return None
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return getattr(reason, "strerror", None) or str(reason)

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._sender.join(timeout=SEND_TIMEOUT_S + 1)
        for t in self._recorders.values():
            t.join(timeout=5)
