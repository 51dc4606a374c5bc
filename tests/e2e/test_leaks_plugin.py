"""The pytest plugin in a real pytest run: planted leaks error with their line, fixed ones pass."""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.capabilities import run

ROOT = Path(__file__).resolve().parents[2]
LEAKS = ROOT / "examples" / "leaks"


def planted_line(name: str) -> int:
    for n, line in enumerate((LEAKS / name).read_text().splitlines(), 1):
        if "# PLANTED:" in line:
            return n
    raise AssertionError(name)


def outcomes(junit: Path) -> dict[str, str | None]:
    """test name -> None when it passed, else the text of its error."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        bad = case.find("error")
        if bad is None:
            bad = case.find("failure")
        name = case.get("name")
        if bad is not None:
            out[name] = (bad.get("message") or "") + (bad.text or "")
        else:
            out.setdefault(name, None)
    return out


def test_planted_leaks_fail_and_fixed_pass(tmp_path):
    junit = tmp_path / "junit.xml"
    proc = run([sys.executable, "-m", "pytest", "examples/leaks/planted_tests.py", "-p", "no:cacheprovider",
                "-q", f"--junitxml={junit}"], cwd=ROOT, timeout=120)
    assert proc.returncode == 1, proc.stdout[-2000:]
    got = outcomes(junit)
    expected = {"test_leaky_eventfd_loop": ("eventfd", "eventfd_loop.py", "opened at"),
                "test_leaky_client": ("tcp", "client.py", "opened at"),
                "test_leaky_worker": ("thread", "worker.py", "started at"),
                "test_leaky_poller": ("task", "poller.py", "created at")}
    for test, (kind, file, verb) in expected.items():
        assert got[test] is not None, test
        assert f"1 {kind} left behind, {verb} examples/leaks/{file}:{planted_line(file)} in " in got[test], got[test]
    passed = {name for name, err in got.items() if err is None}
    assert passed == {"test_fixed_eventfd_loop", "test_fixed_client", "test_fixed_worker", "test_fixed_poller",
                      "test_leaky_eventfd_loop_ignored_by_kind", "test_leaky_worker_ignored_by_frame"}


LEAKY_TEST = """
import os
_kept = []
def test_leaks_an_eventfd():
    _kept.append(os.eventfd(0))
"""


def test_off_unless_asked(tmp_path):
    test_file = tmp_path / "test_unmarked.py"
    test_file.write_text(LEAKY_TEST)
    off = run([sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider", "-q"], cwd=tmp_path)
    assert off.returncode == 0, off.stdout
    on = run([sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider", "-q",
              "--coroscope-leaks", "--coroscope-leaks-retry", "0.1"], cwd=tmp_path)
    assert on.returncode == 1
    assert f"1 eventfd left behind, opened at test_unmarked.py:5 in test_leaks_an_eventfd" in on.stdout
    ignored = run([sys.executable, "-m", "pytest", str(test_file), "-p", "no:cacheprovider", "-q",
                   "--coroscope-leaks", "--coroscope-leaks-ignore-kind", "eventfd"], cwd=tmp_path)
    assert ignored.returncode == 0, ignored.stdout
