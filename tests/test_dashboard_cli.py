"""`coroscope top` on bad input: one clear line on stderr, a non-zero exit, no traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from .capabilities import run
from .test_dashboard_scenario import write_recording


def top(*args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "diag.cli", "top", *args], timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coroscope: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_no_such_pid():
    assert_one_line_error(top("99999999"), "no process with pid 99999999")


def test_pid_that_is_not_traced():
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert_one_line_error(top(str(sleeper.pid)), f"pid {sleeper.pid} publishes no probe region",
                              "COROSCOPE_TRACE=1")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_neither_pid_nor_replay():
    assert_one_line_error(top(), "give the pid of a traced process, or --replay FILE")


def test_record_into_a_missing_folder(tmp_path):
    assert_one_line_error(top("--replay", str(tmp_path / "x.jsonl"), "--record",
                              str(tmp_path / "no" / "r.jsonl")), "is not a writable folder")


@pytest.mark.parametrize("damage, needle", [
    (lambda data: data[:-40], "is truncated at line 6"),
    (lambda data: data.replace(b'"version": 1', b'"version": 2', 1), "format version 2"),
    (lambda data: b"\x00\x01garbage\n", "is not a coroscope top recording"),
])
def test_damaged_replay_files(tmp_path, damage, needle):
    good = tmp_path / "good.jsonl"
    write_recording(good)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(damage(good.read_bytes()))
    assert_one_line_error(top("--replay", str(bad)), needle)
