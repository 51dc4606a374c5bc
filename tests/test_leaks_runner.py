"""The cycle runner, the goleak-style retry, the filters and the live trend, in process."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from diag.fds import leaks
from diag.fds.trend import FdTrend

_kept: list[int] = []


def _leak_eventfd():
    _kept.append(os.eventfd(0))


def _close_kept():
    while _kept:
        os.close(_kept.pop())


def test_run_cycles_counts_exactly_and_names_the_line():
    line = _leak_eventfd.__code__.co_firstlineno + 1
    try:
        report = leaks.run_cycles(_leak_eventfd, cycles=7, warmup=2, retry_timeout=0.05)
    finally:
        _close_kept()
    assert report.per_cycle["eventfd"] == 1.0
    assert [leak.kind for leak in report.leaks] == ["eventfd"]
    leak = report.leaks[0]
    assert leak.total == 7
    site = leak.opened_at[0]
    assert (site.line, site.function, site.count) == (line, "_leak_eventfd", 7)
    assert site.file.endswith("tests/test_leaks_runner.py")
    assert leak.message == f"1 eventfd per cycle, opened at {site.file}:{line} in _leak_eventfd"


def test_growth_only_once_is_not_a_leak():
    calls = []

    def cycle():
        calls.append(1)
        if len(calls) == 2:          # the first measured cycle fills a cache, then nothing more
            _kept.append(os.eventfd(0))

    try:
        report = leaks.run_cycles(cycle, cycles=6, warmup=1, retry_timeout=0.05)
    finally:
        _close_kept()
    assert report.leaks == []
    assert any("eventfd" in n for n in report.notices)


def test_filters_by_kind_and_by_frame():
    try:
        by_kind = leaks.run_cycles(_leak_eventfd, cycles=3, warmup=0, retry_timeout=0.05,
                                   filters=leaks.Filters(kinds=frozenset({"eventfd"})))
        by_frame = leaks.run_cycles(_leak_eventfd, cycles=3, warmup=0, retry_timeout=0.05,
                                    filters=leaks.Filters(frames=("in _leak_eventfd",)))
        other_frame = leaks.run_cycles(_leak_eventfd, cycles=3, warmup=0, retry_timeout=0.05,
                                       filters=leaks.Filters(frames=("no_such_function",)))
    finally:
        _close_kept()
    assert by_kind.leaks == [] and by_frame.leaks == []
    assert [leak.kind for leak in other_frame.leaks] == ["eventfd"]


def test_settle_waits_for_a_thread_that_is_exiting():
    before = leaks.take_snapshot()
    release = threading.Event()
    t = threading.Thread(target=release.wait, name="exiting-soon")
    t.start()
    timer = threading.Timer(0.15, release.set)
    try:
        _snap, leaked, _ = leaks.settle(before, timeout=0)      # no patience: reported
        assert {i.kind for i in leaked} == {"thread"}
        timer.start()                 # (the Timer is a thread too; it exits with the worker)
        _snap, leaked, retries = leaks.settle(before, timeout=3.0)
        assert leaked == [] and retries > 0
    finally:
        release.set()
        t.join()
        timer.join()


def test_trend_warns_only_on_steady_growth():
    trend = FdTrend(window=5, min_growth=3)
    for i, (ev, tcp) in enumerate([(2, 10), (3, 12), (4, 9), (5, 13), (6, 10), (7, 11)]):
        trend.add({"eventfd": ev, "tcp": tcp}, t=float(i))
    assert [w.kind for w in trend.warnings()] == ["eventfd"]
    assert trend.warnings()[0].grew_by == 4


def test_trend_samples_a_real_process():
    code = "import os,sys\nfds=[]\nfor line in sys.stdin:\n    fds.append(os.eventfd(0)); print(len(fds), flush=True)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        trend = FdTrend(window=4, min_growth=3)
        for _ in range(4):
            proc.stdin.write("\n"); proc.stdin.flush(); proc.stdout.readline()
            trend.sample(proc.pid)
        assert trend.series("eventfd") == [1, 2, 3, 4]
        assert [w.kind for w in trend.warnings()] == ["eventfd"]
    finally:
        proc.kill(); proc.wait()
        proc.stdin.close(); proc.stdout.close()
