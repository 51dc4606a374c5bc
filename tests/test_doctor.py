"""coroscope doctor without a target: findings and their ranking, the summary, the HTML, wrk output."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from diag.doctor.command import summary_lines
from diag.doctor.findings import find, short_frame
from diag.doctor.load import parse_wrk, summarize
from diag.doctor.report_html import line_plot, render
from diag.doctor.target import expand_command
from diag.errors import CoroscopeError
from diag.model.doctor import DoctorReport, FlameGraph, LatencyStats, Run, TimePoint


def make_run(label, syscalls=None, fds_after=(8, 8, 8, 8), warnings=(), rate=1000.0, p99=2.0,
             flames=()):
    fds_after = list(fds_after)
    return Run(
        label=label, command=["python", "-m", "svc"], loop=label, pid=42,
        latency=LatencyStats("wrk", 50, 2.0, int(rate * 2), rate, 0, 1.0, 1.5, p99, None),
        latency_p50_ms=[TimePoint(0.1 * i, 1.0 + i) for i in range(5)],
        latency_p99_ms=[TimePoint(0.1 * i, 2.0 + i) for i in range(5)],
        fds=[TimePoint(0.1 * i, 8 + i) for i in range(5)], threads=[],
        syscalls_backend="bpf", syscalls_per_request=syscalls, fds_after_cycle=fds_after,
        leaked_fds_per_cycle=(fds_after[-1] - fds_after[0]) / (len(fds_after) - 1),
        warnings=list(warnings), slow_steps=0, scheduling_lag_ms=None, flames=list(flames))


SVG = ('<?xml version="1.0" standalone="no"?><svg id="cs-flame" width="100" height="40" '
       'xmlns="http://www.w3.org/2000/svg"><g class="f"><rect width="90" height="10"/></g></svg>')


def test_findings_rank_defects_before_costs_before_context():
    leaky = make_run("leaky", {"epoll_wait": 1, "recvfrom": 1, "sendto": 1}, fds_after=(8, 9, 10, 11))
    blocked = make_run("blocked", {"epoll_wait": 1, "recvfrom": 1, "sendto": 1, "mmap": 1,
                                   "mremap": 1, "munmap": 1},
                       warnings=[("blocked-loop", "a step took 201 ms", "probe")], rate=500.0)
    findings = find([leaky, blocked])
    severities = [f.severity for f in findings]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)
    assert findings[0].run == "blocked" and "blocked" in findings[0].title
    assert findings[1].run == "leaky" and findings[1].title == "1 fd leaked per connection cycle"
    assert "fds after each cycle" in findings[1].evidence[0] and "[8, 9, 10, 11]" in findings[1].evidence[0]
    mapping = next(f for f in findings if "map and unmap" in f.title)
    assert mapping.severity == "warning" and mapping.title.startswith("3 of 6")
    compare = next(f for f in findings if f.run == "all" and "syscalls per request" in f.title)
    assert compare.title == "leaky makes 3 syscalls per request, blocked 6"
    ratio = next(f for f in findings if "requests/s" in f.title)
    assert ratio.title == "leaky served 2.00x the requests/s of blocked"


def test_task_leak_is_a_defect_with_its_evidence():
    run = make_run("asyncio", {"epoll_wait": 1, "recvfrom": 1, "sendto": 1})
    run.tasks_after_cycle, run.leaked_tasks_per_cycle = [4, 5, 6, 7], 1.0
    run.leaked_task_survivors = ["4 x _idle_watchdog (created at svc.py:24)"]
    findings = find([run])
    assert findings[0].severity == "error"
    assert findings[0].title == "1 task left pending per connection cycle"
    assert findings[0].evidence == [
        "live tasks after each cycle (connect, 10 requests, close): [4, 5, 6, 7]",
        "still pending: 4 x _idle_watchdog (created at svc.py:24)"]
    report = DoctorReport("now", "svc", "http", 2.0, [run], findings)
    assert any(l.split() == ["tasks", "leaked", "per", "cycle", "1"] for l in summary_lines(report))
    assert "live tasks after each cycle" in render(report)
    run.tasks_after_cycle, run.leaked_tasks_per_cycle = [4, 4, 4, 4], 0.0
    assert not [f for f in find([run]) if "task" in f.title]


def test_clean_run_has_no_defects():
    findings = find([make_run("clean", {"epoll_wait": 1, "recvfrom": 1, "sendto": 1})])
    assert [f.severity for f in findings] == ["info"]


def test_summary_lists_findings_and_runs_side_by_side():
    runs = [make_run("runtime", {"read": 1.0}), make_run("asyncio", {"read": 1.0, "write": 1.0})]
    report = DoctorReport("2026-01-01T00:00:00Z", "svc", "http", 2.0, runs, find(runs), "r.html")
    text = "\n".join(summary_lines(report))
    assert "Findings, by impact" in text
    header = next(l for l in text.splitlines() if "runtime" in l and "asyncio" in l and "requests" not in l)
    assert header.index("runtime") < header.index("asyncio")
    assert "syscalls per request" in text and "report: r.html" in text


def test_line_plot_draws_one_path_per_series_scaled_to_the_data():
    svg = line_plot({"a": [TimePoint(0, 0), TimePoint(1, 10)], "b": [TimePoint(0, 5)], "c": []},
                    "title", "ms", "p1")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    paths = root.findall(f"{ns}path")
    assert [p.get("data-series") for p in paths] == ["a", "b"]
    # 10 is the top of the y axis (nice maximum 10): the path ends at the plot's top edge
    assert paths[0].get("d").endswith(",28.0")
    empty = ET.fromstring(line_plot({}, "t", "ms", "p2"))
    assert "no samples" in "".join(empty.itertext())


def test_html_report_is_self_contained():
    flame = FlameGraph("cpu", "py-spy", SVG, 10.0, [("f (a/b.py)", 0.9)])
    runs = [make_run("runtime", {"read": 1.0}, flames=[flame])]
    page = render(DoctorReport("now", "svc <x>", "http", 2.0, runs, find(runs)))
    assert "svc &lt;x&gt;" in page
    assert page.count('<iframe class="flame"') == 1 and 'srcdoc="' in page
    assert 'id="plot-latency"' in page and 'id="plot-fds"' in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched


def test_wrk_output_parsing():
    out = """Running 2s test @ http://127.0.0.1:1/
  2 threads and 50 connections
  Latency Distribution
     50%  553.00us
     75%  767.00us
     90%    1.15ms
     99%    4.61ms
  81290 requests in 1.01s, 7.05MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  80759.81
"""
    r = parse_wrk(out, 50, 1)
    assert r.requests == 81290 and r.errors == 3 and r.requests_per_s == 80759.81
    assert r.percentiles_ms == {"50": 0.553, "75": 0.767, "90": 1.15, "99": 4.61}
    with pytest.raises(ValueError):
        parse_wrk("garbage", 1, 1)


def test_client_latency_summary_and_timeline():
    samples = [(0.01 * i, 0.001 * (i + 1)) for i in range(100)]  # 1..100 ms over 1 s
    s = summarize(samples)
    assert s["p50_ms"] == pytest.approx(51.0) and s["max_ms"] == pytest.approx(100.0)
    assert len(s["timeline"]) == 10 and sum(b["count"] for b in s["timeline"]) == 100


def test_helpers():
    assert short_frame("f (/a/b/c/d.py)") == "f (c/d.py)"
    assert expand_command(["{python}", "-m", "x"])[0] == sys.executable
    with pytest.raises(CoroscopeError, match="unknown placeholder"):
        expand_command(["{nope}"])


def test_cli_bad_input_is_one_line():
    for argv, needle in ((["doctor"], "no service to diagnose"),
                         (["doctor", "--", "/nonexistent/binary"], "cannot start"),
                         (["doctor", "--duration", "0", "--", "true"], "--duration")):
        proc = subprocess.run([sys.executable, "-m", "diag.cli", *argv], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2, (argv, proc.stderr)
        errors = [l for l in proc.stderr.splitlines() if l.startswith("coroscope: error:")]
        assert len(errors) == 1 and needle in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr
