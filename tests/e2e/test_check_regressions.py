"""coroscope check on the real example service: passes clean, fails on each planted regression."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from diag.doctor.measure import TaskCounter
from diag.doctor.target import Target
from tests.capabilities import require

ROOT = Path(__file__).resolve().parents[2]


def check(tmp_path, *extra):
    cmd = [sys.executable, "-m", "diag.cli", "check", "--config", str(ROOT / "coroscope.toml"),
           "--scenario", "http-asyncio", "--baseline", str(tmp_path / "baseline.json"),
           "--markdown", str(tmp_path / "summary.md"), "--junit", str(tmp_path / "junit.xml"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory):
    require("bcc")
    tmp = tmp_path_factory.mktemp("check")
    proc = check(tmp, "--update-baseline")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp


def test_clean_tree_passes_and_baseline_is_exact(baseline_dir):
    recorded = json.loads((baseline_dir / "baseline.json").read_text())
    per_request = recorded["scenarios"]["http-asyncio"]["syscalls_per_request"]
    # one request on a warm keep-alive connection: one wake-up, one read, one write, and every
    # count a whole number (the window holds exactly the requests, nothing else)
    assert per_request.get("epoll_wait") == 1.0
    assert all(float(v).is_integer() for v in per_request.values())
    proc = check(baseline_dir)
    assert proc.returncode == 0, proc.stdout
    assert "coroscope check: PASSED" in proc.stdout
    # live tasks were counted (from the probe file), not skipped: none left behind by a cycle
    assert "PASS  http-asyncio  leaked_tasks_per_cycle: 0 tasks per cycle (budget 0)" in proc.stdout


@pytest.mark.parametrize("regression, budget, evidence", [
    ("extra_syscall", "syscalls_per_request", "getppid: 0 -> 1 per request"),
    ("fd_leak", "leaked_fds_per_cycle", "fds leaked: 1 per cycle"),
    ("task_leak", "leaked_tasks_per_cycle", "tasks leaked: 1 per cycle"),
    ("blocking", "warnings", "blocked-loop"),
])
def test_each_planted_regression_fails_naming_it(baseline_dir, tmp_path, regression, budget, evidence):
    (tmp_path / "baseline.json").write_bytes((baseline_dir / "baseline.json").read_bytes())
    proc = check(tmp_path, "--var", f"service=examples.regressions.{regression}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = [l for l in proc.stdout.splitlines() if l.startswith("FAIL")]
    assert len(failed) == 1 and budget in failed[0] and evidence in failed[0], proc.stdout
    if regression == "task_leak":  # the probe's ring names the tasks that stayed, and their maker
        assert ("still pending: 4 x _idle_watchdog (created at examples/regressions/task_leak.py:"
                in failed[0]), failed[0]
    assert evidence in (tmp_path / "summary.md").read_text()
    assert 'failures="1"' in (tmp_path / "junit.xml").read_text()


def test_blocking_on_the_runtime_is_seen_by_the_loop_itself(baseline_dir, tmp_path):
    """On the runtime, every callback is timed: the probe's own slow-step records name the block."""
    proc = subprocess.run(
        [sys.executable, "-m", "diag.cli", "check", "--config", str(ROOT / "coroscope.toml"),
         "--scenario", "http-runtime", "--var", "service=examples.regressions.blocking",
         "--baseline", str(tmp_path / "none.json"), "--markdown", str(tmp_path / "s.md"),
         "--junit", str(tmp_path / "j.xml")],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1
    warning = next(l for l in proc.stdout.splitlines() if l.startswith("FAIL") and "warnings" in l)
    assert "[probe]" in warning and "blocked the loop" in warning, warning


# a stock loop made directly, not through an event loop policy (as uvicorn --loop asyncio does)
_DIRECT_LOOP = """
import asyncio
loop = asyncio.SelectorEventLoop()
server = loop.run_until_complete(loop.create_server(asyncio.Protocol, "127.0.0.1", 0))
print("listening on 127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
loop.run_forever()
"""

# a traced service that runs no asyncio at all: its probe is published and sees no task
_NO_LOOP = """
import socketserver
server = socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler)
print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
server.serve_forever()
"""


def test_tasks_not_countable_say_why():
    """No probe file, or a probe that sees no task: "not measured" with the reason, never 0."""
    with Target([sys.executable, "-m", "examples.http_service", "--port", "0"], loop="asyncio") as t:
        counter = TaskCounter(t.pid, wait=0.2)
        assert counter.alive() is None and counter.why_not.startswith("no probe file: ")
        assert "COROSCOPE_TRACE=1" in counter.why_not
    with Target([sys.executable, "-c", _NO_LOOP], loop="asyncio", trace=True) as t:
        counter = TaskCounter(t.pid)
        try:
            assert counter.alive() is None
            assert counter.why_not.startswith("the probe saw no task created"), counter.why_not
        finally:
            counter.close()


def test_a_loop_made_without_a_policy_is_counted():
    """SelectorEventLoop() called directly is traced like any other: its one finished task
    (run_until_complete's) is counted, and none is alive."""
    with Target([sys.executable, "-c", _DIRECT_LOOP], loop="asyncio", trace=True) as t:
        counter = TaskCounter(t.pid)
        try:
            assert counter.alive() == 0, counter.why_not
            assert counter.reader.counters()["tasks_created"] >= 1
        finally:
            counter.close()


def test_untraced_scenario_reports_tasks_not_measured(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[check]\nbaseline = "b.json"\nmarkdown = "s.md"\njunit = "j.xml"\n'
                   '[[scenario]]\nname = "plain"\nloop = "asyncio"\ncycles = 2\n'
                   'command = ["{python}", "-m", "examples.regressions.task_leak", "--port", "0"]\n'
                   '[scenario.budgets]\nsyscalls_per_request = false\n')
    proc = subprocess.run([sys.executable, "-m", "diag.cli", "check", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    skipped = [l for l in proc.stdout.splitlines() if l.startswith("SKIP")]
    assert skipped == ["SKIP  plain  leaked_tasks_per_cycle: tasks per cycle not measured: the "
                       "scenario runs without trace = true, and live tasks are counted from the "
                       "probe file tracing publishes"], proc.stdout
    assert 'skipped="1"' in (tmp_path / "j.xml").read_text()
