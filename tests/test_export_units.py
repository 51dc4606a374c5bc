"""The exporter's pieces that need no process: histogram buckets, service names, push URLs,
the bounded push queue."""
from __future__ import annotations

import os
import subprocess
import sys

from diag.export.metrics import Histogram
from diag.export.push import Pushed, Pusher, ingest_url
from diag.export.targets import service_name


def test_histogram_buckets_are_cumulative_in_seconds():
    h = Histogram((0.001, 0.01, 0.1))
    for ns in (500_000, 2_000_000, 3_000_000, 50_000_000, 2_000_000_000):
        h.observe_ns(ns)
    assert h.buckets() == [("0.001", 1), ("0.01", 3), ("0.1", 4), ("+Inf", 5)]
    assert abs(h.sum - 2.0555) < 1e-9


def _name_of(cmd, cwd, env=None) -> str:
    child = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE)
    try:
        child.stdout.readline()                 # it is running its own code now
        return service_name(child.pid)
    finally:
        child.kill()
        child.wait()


def test_service_name_is_the_module_the_script_or_coroscope_service(tmp_path):
    (tmp_path / "sleeper.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(30)\n")
    assert _name_of([sys.executable, "-u", "-m", "sleeper"], tmp_path) == "sleeper"
    assert _name_of([sys.executable, "-X", "dev", "sleeper.py"], tmp_path) == "sleeper"
    env = dict(os.environ, COROSCOPE_SERVICE="checkout")
    assert _name_of([sys.executable, "sleeper.py"], tmp_path, env) == "checkout"


def test_ingest_url_names_the_service_and_pid():
    url = ingest_url("http://h:4040/", Pushed(7, "api", 100.2, 110.9, 100.0, b""))
    assert url == ("http://h:4040/ingest?name=api.cpu%7Bservice%3Dapi%2Cpid%3D7%7D&from=100"
                   "&until=110&format=pprof&sampleRate=100&spyName=coroscope")


def test_the_queue_drops_the_oldest_when_full():
    lines = []
    pusher = Pusher("http://127.0.0.1:9/", max_queue=2, backoff_max_s=0.5, warn=lines.append)
    try:
        for i in range(5):
            pusher.put(Pushed(i, "s", i, i + 1, 100.0, b"x"))
        assert [item.pid for item in pusher.queue] == [3, 4] and pusher.dropped == 3
    finally:
        pusher.close()
