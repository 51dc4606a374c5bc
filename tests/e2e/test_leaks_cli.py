"""``coroscope leaks`` on the planted leaks, their fixed versions, the runtime and whole commands."""
from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from tests.capabilities import run

ROOT = Path(__file__).resolve().parents[2]
LEAKS = ROOT / "examples" / "leaks"
CLI = [sys.executable, "-m", "diag.cli", "leaks"]


def planted_line(name: str) -> int:
    for n, line in enumerate((LEAKS / name).read_text().splitlines(), 1):
        if "# PLANTED:" in line:
            return n
    raise AssertionError(f"no PLANTED marker in {name}")


def leaks_json(*target: str, cycles: int = 6, warmup: int = 1, extra=(), retry: float = 0.3) -> tuple[int, dict]:
    proc = run(CLI + ["--json", "--cycles", str(cycles), "--warmup", str(warmup), "--retry-timeout", str(retry),
                      *extra, "--", *target], timeout=120, cwd=ROOT)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("name,kind", [("eventfd_loop.py", "eventfd"), ("client.py", "tcp"),
                                       ("worker.py", "thread"), ("poller.py", "task")])
def test_planted_leak_found_with_its_line_and_fixed_version_clean(name, kind):
    code, report = leaks_json(f"examples/leaks/{name}")
    assert code == 1
    assert report["per_cycle"][kind] == 1.0
    assert [leak["kind"] for leak in report["leaks"]] == [kind]
    site = report["leaks"][0]["opened_at"][0]
    assert (site["file"], site["line"]) == (f"examples/leaks/{name}", planted_line(name))
    assert site["count"] == 6
    # the stack stops at the user's code: none of coroscope's frames (its cycle runner, the runtime)
    files = [frame["file"] for frame in site["stack"]]
    assert not [f for f in files if f.startswith(("diag/", "runtime/")) or "/diag/" in f or "/runtime/" in f], files
    assert f"1 {kind} per cycle" in report["leaks"][0]["message"]
    assert f"examples/leaks/{name}:{planted_line(name)} in {site['function']}" in report["leaks"][0]["message"]

    code, fixed = leaks_json(f"examples/leaks/{name}:cycle_fixed")
    assert code == 0 and fixed["leaks"] == []
    assert all(v == 0 for v in fixed["per_cycle"].values())


def test_runtime_1000_loop_lifecycles_leak_nothing():
    code, report = leaks_json("examples/leaks/runtime_loops.py", cycles=1000, warmup=10, retry=2.0)
    assert code == 0, (report["leaks"], report["per_cycle"], report["notices"])
    assert report["cycles"] == 1000 and len(report["samples"]) == 1000
    assert report["leaks"] == []
    assert all(v == 0 for v in report["per_cycle"].values())
    # nothing accumulated: the last sample's fds are the baseline's, kind by kind
    last = report["samples"][-1]
    assert {k: v for k, v in last.items() if k not in ("thread",)} == \
        {k: v for k, v in report["baseline"].items() if k not in ("thread",)}


def test_text_output_names_kind_and_site():
    proc = run(CLI + ["--cycles", "4", "--warmup", "1", "--retry-timeout", "0.2", "--",
                      "examples/leaks/eventfd_loop.py"], cwd=ROOT)
    assert proc.returncode == 1
    assert f"1 eventfd per cycle, opened at examples/leaks/eventfd_loop.py:{planted_line('eventfd_loop.py')} in __init__" \
        in proc.stdout


ORPHANER = textwrap.dedent("""
    import os, sys
    if os.fork() == 0:                 # the grandchild outlives the command when asked to
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):           # a daemon lets go of the caller's pipes
            os.dup2(null, fd)
        if sys.argv[1] == "leak":
            os.execvp("sleep", ["sleep", "120"])
        os._exit(0)
""")


def test_command_mode_counts_processes_left_running(tmp_path):
    script = tmp_path / "orphaner.py"
    script.write_text(ORPHANER)
    code, report = leaks_json(sys.executable, str(script), "leak", cycles=3, warmup=0)
    leftovers = [int(p) for n in report["notices"] if n.startswith("left running")
                 for p in n.split(":", 1)[1].split()]
    try:
        assert code == 1 and report["mode"] == "command"
        assert report["per_cycle"]["process"] == 1.0
        assert [leak["kind"] for leak in report["leaks"]] == ["process"]
        assert len(leftovers) == 3
    finally:
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    code, clean = leaks_json(sys.executable, str(script), "exit", cycles=3, warmup=0)
    assert code == 0 and clean["leaks"] == []


def test_bad_targets_one_line():
    proc = run(CLI + ["--", "examples/leaks/no_such_file.py"], cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "coroscope: error: cannot load examples/leaks/no_such_file.py: LookupError: no such file: examples/leaks/no_such_file.py"
    proc = run(CLI + ["--", "examples/leaks/worker.py:no_such_function"], cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "has no function no_such_function()" in proc.stderr
    proc = run(CLI + ["--", "/nonexistent/command", "arg"], cwd=ROOT)
    assert (proc.returncode, proc.stderr.strip()) == (2, "coroscope: error: no such command: /nonexistent/command")


STUCK = textwrap.dedent("""
    import pathlib, signal, sys, time
    def asked(sig, frame):
        pathlib.Path(sys.argv[1]).write_text(signal.Signals(sig).name)
        sys.exit(0)
    signal.signal(signal.SIGINT, asked)
    print("started", flush=True)
    time.sleep(60)
""")


def test_a_workload_past_its_timeout_is_asked_to_end_not_killed(tmp_path):
    """The workload that never finishes gets SIGINT first (as every command coroscope starts:
    diag.started), so its finally blocks and atexit run; the report is one line and exit 1."""
    script, marker = tmp_path / "stuck.py", tmp_path / "asked"
    script.write_text(STUCK)
    proc = run(CLI + ["--cycles", "1", "--warmup", "0", "--timeout", "1", "--",
                      sys.executable, str(script), str(marker)], timeout=60, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("did not finish in 1 s"), proc.stderr
    assert marker.read_text() == "SIGINT"
