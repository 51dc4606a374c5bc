"""Unit tests of the syscall counter's pure parts: aggregation, hints, strace parsing, BPF text,
and the command's one-line errors (these need no root)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from diag.model.base import to_jsonable
from diag.syscalls.aggregate import build_report, distribution, percentile
from diag.syscalls.bpf import BpfOptions, bpf_text
from diag.syscalls.counts import LOOP, REQUEST, THREAD, UNATTRIBUTED, RawCounts
from diag.syscalls.ptrace import parse_strace
from tests.capabilities import run


def _raw(per_request: dict[str, int], requests: int, *, loop: dict[str, int] | None = None, done=None):
    raw = RawCounts(backend="bpf", by=REQUEST, requests_done=done)
    for rid in range(1, requests + 1):
        for name, n in per_request.items():
            raw.cell((REQUEST, rid), name).count += n
        raw.sequences[rid] = [n for n, k in per_request.items() for _ in range(k)]
    for name, n in (loop or {}).items():
        raw.cell((LOOP, 0), name).count += n
    return raw


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([], 50) == 0
    d = distribution([4, 4, 6], requests=4)          # one request made no such call
    assert (d.mean, d.p50, d.p99, d.max, d.total) == (3.5, 4, 6, 6, 14)


def test_direct_and_amortized_per_request():
    raw = _raw({"getppid": 3, "write": 1}, 100, loop={"epoll_wait": 50})
    report = build_report(raw, target="t", pid=1)
    assert report.requests == 100
    assert report.per_request.by_name["getppid"].mean == 3
    assert report.per_request.by_name["write"].mean == 1
    t = report.per_request.total
    assert (t.mean, t.p50, t.p99, t.max) == (4, 4, 4, 4)
    assert report.amortized_per_request == 4.5
    assert report.loop_calls == 50
    rows = {r.name: r for r in report.names}
    assert rows["epoll_wait"].per_request == 0 and rows["epoll_wait"].amortized == 0.5
    assert report.top_requests[0].sequence == ["getppid"] * 3 + ["write"]
    js = to_jsonable(report)
    assert js["backend"] == "bpf" and js["requests"] == 100
    assert js["per_request"]["by_name"]["getppid"]["mean"] == 3
    assert set(js["per_request"]["total"]) >= {"mean", "p50", "p99", "max"}


def test_requests_without_syscalls_count_as_zero():
    raw = _raw({"getppid": 2}, 10, done=20)          # the probe file saw 20 requests end
    report = build_report(raw, target="t", pid=1)
    assert report.requests == 20
    assert report.per_request.total.mean == 1
    assert report.per_request.total.p50 == 0 and report.per_request.total.max == 2


def test_unattributed_start_up_does_not_drive_hints():
    raw = _raw({"sendto": 1}, 10)
    raw.cell((UNATTRIBUTED, 7), "mmap").count += 100   # interpreter start-up, before the slot
    report = build_report(raw, target="t", pid=1)
    assert report.unattributed_calls == 100
    assert not [h for h in report.hints if h.pattern == "allocation-churn"]


def test_allocation_churn_hint_names_the_big_read():
    raw = _raw({"recvfrom": 1, "sendto": 1}, 100,
               loop={"mmap": 100, "mremap": 100, "munmap": 100, "epoll_wait": 100})
    for rid in range(1, 101):
        raw.cells[(REQUEST, rid)]["recvfrom"].max_request_size = 262144
        raw.cells[(REQUEST, rid)]["recvfrom"].returned = 64
    report = build_report(raw, target="t", pid=1)
    churn = [h for h in report.hints if h.pattern == "allocation-churn"]
    assert churn, report.hints
    assert "recvfrom(262144)" in churn[0].message and "mmap threshold" in churn[0].message
    assert churn[0].message.startswith("3.00 mmap/mremap/munmap per request")


def test_no_churn_hint_without_churn_and_other_patterns():
    raw = _raw({"recvfrom": 3, "epoll_ctl": 2}, 50, loop={"epoll_wait": 10})
    for rid in range(1, 51):
        c = raw.cells[(REQUEST, rid)]["recvfrom"]
        c.returned, c.errors = 3 * 20, {11: 1}        # 3 reads of 20 bytes, one EAGAIN
    patterns = {h.pattern for h in build_report(raw, target="t", pid=1).hints}
    assert "allocation-churn" not in patterns
    assert {"re-registration", "small-reads", "eagain-storm"} <= patterns


def _reads(requests: int, *, reads: int, eagain: int, epoll_ctl: int = 0, getpid: int = 0,
           python: tuple[int, int] | None = (3, 11)):
    """A report of ``requests`` requests whose loop made these calls (reads of 64 bytes)."""
    raw = _raw({"sendto": 1}, requests, loop={"recvfrom": reads, "epoll_ctl": epoll_ctl, "getpid": getpid})
    cell = raw.cells[(LOOP, 0)]["recvfrom"]
    cell.returned, cell.errors = 64 * (reads - eagain), ({11: eagain} if eagain else {})
    raw.python = python
    return build_report(raw, target="t", pid=1)


def _hint(report, pattern: str):
    found = [h for h in report.hints if h.pattern == pattern]
    return found[0] if found else None


def test_every_threshold_is_in_the_one_table():
    from diag.syscalls import hints
    assert hints.THRESHOLDS["re-registration"]["epoll_ctl per request"] == 0.25
    assert hints.THRESHOLDS["eagain-storm"]["share of reads failing with EAGAIN"] == 0.20
    text = open(hints.__file__).read()
    body = text[text.index("def find_hints"):]
    # the rules read their numbers from the table, never from a literal of their own
    assert "_at(" in body and not [line for line in body.splitlines()
                                   if ">= 0." in line or "< 0." in line or ">= 1" in line]


def test_re_registration_fires_at_a_quarter_epoll_ctl_per_request_and_names_the_code():
    # 100 requests, reads that never fail: only the per-request measure can fire
    assert _hint(_reads(100, reads=100, eagain=0, epoll_ctl=24), "re-registration") is None
    hint = _hint(_reads(100, reads=100, eagain=0, epoll_ctl=25), "re-registration")
    assert hint is not None and hint.message.startswith("0.25 epoll_ctl per request (25 over 100 requests")
    assert "loop.sock_recv / loop.sock_sendall" in hint.message and "add_reader" in hint.message
    assert "pause_reading / resume_reading" in hint.message and "Protocol" in hint.message


def test_re_registration_fires_on_the_pairing_with_failed_reads_whatever_the_rate():
    # a sock_recv server whose client was fast: 1 read in 10 blocked, each with an ADD and a DEL
    hint = _hint(_reads(1000, reads=1100, eagain=100, epoll_ctl=200), "re-registration")
    assert hint is not None, "0.20 epoll_ctl per request, but 2 for every failed read"
    assert "100 reads failed with EAGAIN" in hint.message and "2.00 epoll_ctl for each" in hint.message
    # failed reads without registrations (a loop that keeps them): silent
    assert _hint(_reads(1000, reads=1100, eagain=100, epoll_ctl=20), "re-registration") is None
    # a handful of failed reads (under 1 in 100 requests) is not the pattern
    assert _hint(_reads(1000, reads=1005, eagain=5, epoll_ctl=10), "re-registration") is None


def test_eagain_storm_fires_at_a_fifth_of_reads_failing():
    assert _hint(_reads(100, reads=100, eagain=19), "eagain-storm") is None
    hint = _hint(_reads(100, reads=100, eagain=20), "eagain-storm")
    assert hint is not None and hint.message.startswith("20% of reads failed with EAGAIN (20 of 100: recvfrom 20 of 100")
    assert "loop.sock_recv" in hint.message and "data_received" in hint.message


def test_getpid_hint_only_where_the_version_table_says_get_running_loop_calls_getpid():
    from diag.backtrace.reader import version_fact
    assert version_fact((3, 11), "GET_RUNNING_LOOP_GETPID") is True
    assert version_fact((3, 12), "GET_RUNNING_LOOP_GETPID") is False
    assert version_fact((3, 13), "GET_RUNNING_LOOP_GETPID") is False
    hint = _hint(_reads(100, reads=100, eagain=0, getpid=180), "getpid-per-get-running-loop")
    assert hint is not None and hint.message.startswith("1.80 getpid per request (180 over 100 requests) on CPython 3.11")
    assert "asyncio.get_running_loop()" in hint.message and "3.12" in hint.message
    for python in ((3, 12), (3, 13), None):      # no such call there, or the version unknown
        assert _hint(_reads(100, reads=100, eagain=0, getpid=180, python=python),
                     "getpid-per-get-running-loop") is None
    assert _hint(_reads(100, reads=100, eagain=0, getpid=49), "getpid-per-get-running-loop") is None


STRACE_SAMPLE = """\
101 getppid()                           = 100 <0.000010>
101 read(3, ""..., 262144)              = 64 <0.000020>
102 epoll_wait(4,  <unfinished ...>
101 recvfrom(5, 0x7f, 262144, 0, NULL, NULL) = -1 EAGAIN (Resource temporarily unavailable) <0.000005>
102 <... epoll_wait resumed>[{events=EPOLLIN, data={u32=5, u64=5}}], 10, -1) = 1 <0.001000>
101 write(1, "x", 1)                    = 1 <0.000003>
101 exit_group(0)                       = ?
101 +++ exited with 0 +++
"""


def test_strace_output_is_counted_per_thread():
    raw = RawCounts(backend="ptrace", by=THREAD)
    parse_strace(STRACE_SAMPLE.splitlines(), raw)
    t101, t102 = raw.cells[(THREAD, 101)], raw.cells[(THREAD, 102)]
    assert {n: c.count for n, c in t101.items()} == {"getppid": 1, "read": 1, "recvfrom": 1, "write": 1,
                                                      "exit_group": 1}
    assert t101["read"].max_request_size == 262144 and t101["read"].returned == 64
    assert t101["recvfrom"].max_request_size == 262144 and t101["recvfrom"].errors == {11: 1}
    assert t102["epoll_wait"].count == 1 and t102["epoll_wait"].returned == 1
    assert t102["epoll_wait"].time_ns == 1_000_000


def test_bpf_text_follows_options():
    text = bpf_text(BpfOptions(tgid=4242, by=REQUEST))
    assert "#define TGID 4242" in text and "#define BY_THREAD 0" in text and "#define KEEP_SEQUENCES 1" in text
    assert "TRACEPOINT_PROBE(raw_syscalls, sys_enter)" in text and "bpf_probe_read_user" in text
    thread = bpf_text(BpfOptions(tgid=1, by=THREAD))
    assert "#define BY_THREAD 1" in thread and "#define KEEP_SEQUENCES 0" in thread


def _coroscope(*args, timeout=60):
    return run([sys.executable, "-m", "diag.cli", "syscalls", *args], timeout=timeout)


def test_print_bpf_flag():
    r = _coroscope("--print-bpf", "--pid", "77", "--by", "task")
    assert r.returncode == 0
    assert "#define TGID 77" in r.stdout and "#define KIND 2" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--pid", "999999999"], "no process with pid 999999999"),
    ([], "nothing to measure"),
    (["--compare", "asyncio,tokio", "--", "true"], "unknown loop 'tokio'"),
    (["--", "/no/such/program"], "cannot run /no/such/program: no such command"),
    (["--pid", "1", "--", "true"], "not both"),
])
def test_bad_input_is_one_line_and_non_zero(args, message):
    r = _coroscope(*args)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [f"coroscope: error: {r.stderr.strip().split('error: ', 1)[1]}"]
    assert message in r.stderr


def test_a_process_that_is_not_python():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        r = _coroscope("--pid", str(sleeper.pid), "--duration", "1")
        assert r.returncode == 2
        assert r.stderr.strip() == f"coroscope: error: pid {sleeper.pid} (sleep) is not a Python process"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_terminal_view_draws_the_model():
    from rich.console import Console

    from diag.syscalls.render import compare_table, print_report

    raw = _raw({"recvfrom": 1, "sendto": 1}, 10, loop={"mmap": 10, "mremap": 10, "munmap": 10})
    report = build_report(raw, target="python app.py", pid=1, loop="asyncio")
    console = Console(record=True, width=200)
    print_report(report, console)
    console.print(compare_table([("asyncio", report, None), ("uvloop", None, "uvloop is not installed")]))
    text = console.export_text()
    assert "per request: 2.00 syscalls direct (p50 2, p99 2, max 2)" in text
    assert "5.00 amortized" in text
    assert "most expensive requests" in text and "recvfrom sendto" in text
    assert "[allocation-churn]" in text
    assert "uvloop is not installed" in text
