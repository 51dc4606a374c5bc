"""`coroscope export` against real traced services, scraped by a real Prometheus server
(Debian's ``prometheus``, started here on a loopback port with a scrape config written to a
tmp dir), and read back through Prometheus's HTTP API. The truth is what the service says
about itself (examples/fleet_service.py) and the fd inventory of /proc.

Waits are for events (a line on stdout, a Prometheus sample stamped after a moment), bounded
by deadlines; nothing asserts on time."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from diag.fds.inventory import count_kinds
from tests.capabilities import require, run

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
IDLE_TASKS = 3


# ------------------------------------------------------------------ processes
class Service:
    """examples.fleet_service, with connections held open so its task count stays put."""

    def __init__(self, *args: str, env_extra: dict | None = None):
        env = dict(os.environ, **(env_extra or {}))
        self.proc = subprocess.Popen([PY, "-m", "examples.fleet_service", "--idle-tasks",
                                      str(IDLE_TASKS), *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("port "), line
        self.port = int(line.split()[1])
        self.pid = self.proc.pid
        self.conns = []

    def connect(self, n: int) -> None:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            self.conns.append((s, s.makefile("rwb")))

    def send(self, conn_index: int, n: int) -> None:
        _s, f = self.conns[conn_index]
        for _ in range(n):
            f.write(b"ping\n")
            f.flush()
            assert f.readline() == b"ping\n"

    def truth(self) -> dict:
        _s, f = self.conns[0]
        f.write(b"truth\n")
        f.flush()
        return json.loads(f.readline())

    def stop(self) -> None:
        for s, f in self.conns:
            f.close()
            s.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Exporter:
    def __init__(self, *args: str):
        self.proc = subprocess.Popen([PY, "-m", "diag.cli", "export", "--listen", "127.0.0.1:0",
                                      *args], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert "serving http://" in line, (line, self.proc.stderr.read() if self.proc.poll()
                                           is not None else "")
        self.url = line.split()[3]
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url, timeout=30) as resp:
            assert resp.status == 200
            return resp.read().decode()

    def stop(self, read_stderr: bool = True) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.stderr.read() if read_stderr else ""


class Prometheus:
    def __init__(self, tmp: Path, target_port: int):
        (tmp / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
            "scrape_configs:\n  - job_name: coroscope\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", "--web.listen-address=127.0.0.1:0",
             "--storage.tsdb.retention.time=1h"],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "w"))
        self.log = tmp / "prometheus.log"
        self.base = f"http://127.0.0.1:{self._port()}"
        self._until(lambda: self._get("/-/ready").startswith("Prometheus"), "ready")

    def _port(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            ports = [c.laddr.port for c in psutil.Process(self.proc.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN]
            if ports:
                return ports[0]
            time.sleep(0.1)
        raise AssertionError("prometheus never listened: " + self.log.read_text()[-2000:])

    def _get(self, path: str) -> str:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as resp:
                return resp.read().decode()
        except OSError:
            return ""

    def _until(self, ok, what: str, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = ok()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"prometheus: {what} never came; log: "
                             + self.log.read_text()[-2000:])

    def query(self, promql: str) -> list[dict]:
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        data = json.loads(body) if body else {"status": "error"}
        assert data["status"] == "success", data
        return data["data"]["result"]

    def scraped_after(self, promql: str, moment: float) -> list[dict]:
        """The series of ``promql`` once Prometheus holds a sample of them taken after
        ``moment`` (unix time)."""
        def fresh():
            stamps = self.query(f"timestamp({promql})")
            if stamps and all(float(s["value"][1]) > moment for s in stamps):
                return self.query(promql)
            return None
        return self._until(fresh, f"a scrape of {promql} after {moment}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _value(result: list[dict]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


# ------------------------------------------------------------------ the real Prometheus
def test_prometheus_scrapes_a_traced_service_under_load(tmp_path):
    require("prometheus")
    service = Service()
    exporter = Exporter("--pid", str(service.pid))
    prom = None
    try:
        prom = Prometheus(tmp_path, exporter.port)
        sel = f'{{pid="{service.pid}"}}'
        service.connect(4)
        before = service.truth()
        start = time.time()
        base = _value(prom.scraped_after(f"coroscope_requests_total{sel}", start))
        assert base == before["requests"]

        per_conn = 750                                 # load on 4 connections at once
        threads = [threading.Thread(target=service.send, args=(i, per_conn)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = service.truth()
        assert after["requests"] - before["requests"] == 4 * per_conn
        done = time.time()
        grown = _value(prom.scraped_after(f"coroscope_requests_total{sel}", done))
        assert grown - base == 4 * per_conn

        alive = _value(prom.scraped_after(f"coroscope_tasks_alive{sel}", done))
        assert alive == after["tasks"] == 1 + IDLE_TASKS + 4   # main, parked, one per connection

        inventory = count_kinds(service.pid)
        series = prom.scraped_after(f"coroscope_open_fds{sel}", time.time())
        assert {s["metric"]["kind"]: int(float(s["value"][1])) for s in series} == inventory
        assert inventory["socket"] == 1 + 4                      # listener and connections

        # the durations were folded from the ring, labelled by request name
        echo = _value(prom.query(f'coroscope_request_duration_seconds_count{{pid="{service.pid}",'
                                 f'name="echo"}}'))
        lost = _value(prom.query(f"coroscope_probe_records_lost_total{sel}"))
        skipped = _value(prom.query(f"coroscope_probe_records_skipped_total{sel}"))
        assert 0 < echo <= grown
        if lost == skipped == 0:
            assert echo == grown               # every record read: the histogram is exact
        labels = prom.query(f"coroscope_target_info{sel}")[0]["metric"]
        assert labels["service"] == "examples.fleet_service" and labels["loop"] == "runtime"
    finally:
        if prom is not None:
            prom.stop()
        exporter.stop()
        service.stop()


# ------------------------------------------------------------------ bad input
def test_no_traced_process_is_an_empty_metrics_page_with_a_comment():
    plain = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    exporter = Exporter("--pid", str(plain.pid))
    try:
        text = exporter.metrics()
        lines = text.splitlines()
        assert lines and all(line.startswith("#") for line in lines), text
        assert "no traced process" in text
    finally:
        assert exporter.stop() == ""
        plain.kill()
        plain.wait()


def test_a_process_that_exits_ends_its_series_and_the_others_go_on():
    first, second = Service(), Service()
    exporter = Exporter("--pid", str(first.pid), "--pid", str(second.pid))
    try:
        text = exporter.metrics()
        assert f'coroscope_tasks_alive{{pid="{first.pid}"' in text
        assert f'coroscope_tasks_alive{{pid="{second.pid}"' in text
        first.stop()
        second.connect(1)
        second.send(0, 10)
        text = exporter.metrics()
        assert f'pid="{first.pid}"' not in text
        assert f"# coroscope: pid {first.pid} exited" in text
        assert f'coroscope_requests_total{{pid="{second.pid}",service="examples.fleet_service"}}' \
               f' 10.0' in text
    finally:
        assert exporter.stop() == ""
        first.stop()
        second.stop()


def test_all_finds_traced_processes_and_names_them_by_coroscope_service():
    service = Service(env_extra={"COROSCOPE_SERVICE": "checkout"})
    exporter = Exporter("--all")
    try:
        text = exporter.metrics()
        assert f'coroscope_target_info{{loop="runtime",pid="{service.pid}",service="checkout"}} 1.0' \
               in text
    finally:
        exporter.stop()
        service.stop()


def test_a_port_in_use_is_one_line():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        r = run([PY, "-m", "diag.cli", "export", "--listen",
                 f"127.0.0.1:{taken.getsockname()[1]}", "--pid", str(os.getpid())], cwd=ROOT)
        assert r.returncode == 2
        assert r.stderr.count("\n") == 1 and "address already in use" in r.stderr, r.stderr
        assert r.stdout == ""
    finally:
        taken.close()


@pytest.mark.parametrize("listen", ["nonsense:port", "127.0.0.1:70000"])
def test_a_bad_listen_address_is_one_line(listen):
    r = run([PY, "-m", "diag.cli", "export", "--listen", listen, "--pid", "1"], cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--listen" in r.stderr


# ------------------------------------------------------------------ --syscalls
def _syscall_series(text: str, pid: int, syscall: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("coroscope_request_syscalls") and f'syscall="{syscall}"' in line \
                and f'pid="{pid}"' in line:
            name, value = line.rsplit(" ", 1)
            key = name.split("{")[0].rsplit("_", 1)[1]
            if key == "bucket":
                key = "le=" + name.split('le="')[1].split('"')[0]
            out[key] = float(value)
    return out


def test_syscalls_per_request_are_exact_histograms():
    require("root", "bcc")
    service = Service()
    exporter = Exporter("--pid", str(service.pid), "--syscalls")
    try:
        service.connect(1)
        deadline = time.monotonic() + 120
        while not _syscall_series(exporter.metrics(), service.pid, "sendto"):
            assert time.monotonic() < deadline, exporter.metrics()
            service.send(0, 1)                     # until the counter is attached
            time.sleep(0.2)
        # a request finished just now is folded in once both map sets are drained past it: the
        # figure to start from is the one that has stopped moving
        before = _syscall_series(exporter.metrics(), service.pid, "sendto")
        while True:
            time.sleep(0.5)
            settled = _syscall_series(exporter.metrics(), service.pid, "sendto")
            if settled == before:
                break
            before = settled
        service.send(0, 500)
        while (now := _syscall_series(exporter.metrics(), service.pid, "sendto"))["count"] \
                < before["count"] + 500:
            assert time.monotonic() < deadline, now
            time.sleep(0.2)
        # each echo request is one sendto (its recv happens before the request begins); a request
        # under way when the counter attached is counted with the window it ends in: one per
        # connection at that edge (seen 1 run in 3), and every request counted has exactly one
        added = now["count"] - before["count"]
        assert added in (500, 501), (before, now)
        assert now["sum"] - before["sum"] == added
        assert now["le=1.0"] - before["le=1.0"] == added and now["le=0.0"] == before["le=0.0"]
    finally:
        exporter.stop()
        service.stop()


def test_a_profile_url_that_is_not_http_is_one_line():
    r = run([PY, "-m", "diag.cli", "export", "--pid", "1", "--profile-to", "ftp://x"], cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--profile-to" in r.stderr
    assert r.stdout == ""                      # refused before listening
