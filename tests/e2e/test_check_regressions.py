"""coroscope check on the real example service: passes clean, fails on each planted regression."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("regression, budget, evidence", [
    ("extra_syscall", "syscalls_per_request", "getppid: 0 -> 1 per request"),
    ("fd_leak", "leaked_fds_per_cycle", "fds leaked: 1 per cycle"),
    ("blocking", "warnings", "blocked-loop"),
])
def test_each_planted_regression_fails_naming_it(baseline_dir, tmp_path, regression, budget, evidence):
    (tmp_path / "baseline.json").write_bytes((baseline_dir / "baseline.json").read_bytes())
    proc = check(tmp_path, "--var", f"service=examples.regressions.{regression}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = [l for l in proc.stdout.splitlines() if l.startswith("FAIL")]
    assert len(failed) == 1 and budget in failed[0] and evidence in failed[0], proc.stdout
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
