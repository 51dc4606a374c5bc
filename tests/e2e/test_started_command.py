"""A command ``coroscope syscalls -- CMD`` started: its output stays out of the report (in a
private unnamed file, never a pipe that fills), it is asked to end with SIGINT, then SIGTERM,
then SIGKILL, and when it fails on its own its last lines are shown."""
from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

from tests.capabilities import require, run

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
SYSCALLS = [PY, "-m", "diag.cli", "syscalls"]


def _script(tmp_path: Path, text: str) -> str:
    """The program in a file: its text is then not on the report's command line."""
    path = tmp_path / "target.py"
    path.write_text(text)
    return str(path)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_a_command_that_ignores_sigint_and_sigterm_is_still_stopped(tmp_path):
    require("bcc")
    pidfile = tmp_path / "pid"
    prog = ("import os, signal, sys, time\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
            "print('stubborn target up', flush=True)\n"
            "while True:\n    time.sleep(0.01)\n")
    t0 = time.monotonic()
    # the window outlasts the target's start-up (before its handlers are set, SIGINT ends it)
    r = run([*SYSCALLS, "--duration", "4", "--by", "thread", "--", PY, _script(tmp_path, prog)], timeout=60, cwd=ROOT)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    pid = int(pidfile.read_text())
    assert _gone(pid), "SIGKILL ends what SIGINT and SIGTERM did not"
    assert took < 35, took                      # 4 s counted + 3 s after SIGINT + 3 s after SIGTERM
    assert "stubborn target up" not in r.stdout + r.stderr   # its output is not the report's


def test_a_python_program_stopped_with_sigint_leaves_no_traceback_in_the_report(tmp_path):
    require("bcc")
    out = tmp_path / "r.json"
    prog = ("import os, time\nprint('serving', flush=True)\n"
            "while True:\n    os.getppid(); time.sleep(0.01)\n")
    r = run([*SYSCALLS, "--duration", "3", "--by", "thread", "--json", str(out), "--", PY, _script(tmp_path, prog)],
            timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for text in (r.stdout, r.stderr):
        assert "KeyboardInterrupt" not in text and "Traceback" not in text and "serving" not in text
    rep = json.loads(out.read_text())
    assert {n["name"]: n["calls"] for n in rep["names"]}["getppid"] > 20
    assert not [n for n in rep["notes"] if "exited with status" in n], rep["notes"]  # asked to end: no failure


def test_its_output_goes_to_a_private_unnamed_file_and_cannot_block_it(tmp_path):
    require("bcc")
    out, probe = tmp_path / "r.json", tmp_path / "fd1"
    # 4 MB of output, far over a pipe's 64 KiB, then exactly 100 getppid: all of them counted
    prog = ("import os, sys\n"
            f"st = os.stat('/proc/self/fd/1'); open({str(probe)!r}, 'w').write("
            "f\"{os.readlink('/proc/self/fd/1')}|{oct(st.st_mode & 0o777)}|{st.st_nlink}|"
            "{os.readlink('/proc/self/fd/2') == os.readlink('/proc/self/fd/1')}\")\n"
            "for _ in range(4096): sys.stdout.write('x' * 1023 + '\\n')\n"
            "sys.stdout.flush()\n"
            "for _ in range(100): os.getppid()\n")
    r = run([*SYSCALLS, "--by", "thread", "--json", str(out), "--", PY, _script(tmp_path, prog)], timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    where, mode, links, same = probe.read_text().split("|")
    assert where.endswith("(deleted)") and mode == "0o600" and links == "0" and same == "True", where
    assert "xxxx" not in r.stdout + r.stderr
    rep = json.loads(out.read_text())
    assert {n["name"]: n["calls"] for n in rep["names"]}["getppid"] == 100


def test_a_command_failing_at_start_shows_its_last_lines(tmp_path):
    require("bcc")
    out = tmp_path / "r.json"
    prog = ("import sys\nfor i in range(40): print(f'loading part {i}')\n"
            "sys.exit('cannot read config: app.toml: no such file')\n")
    r = run([*SYSCALLS, "--duration", "5", "--json", str(out), "--", PY, _script(tmp_path, prog)], timeout=60, cwd=ROOT)
    lines = r.stderr.splitlines()
    i = next(i for i, line in enumerate(lines) if "the command exited with status 1 after" in line)
    assert lines[i].endswith("its last lines:"), lines[i]
    shown = [line.removeprefix("  | ") for line in lines[i + 1:] if line.startswith("  | ")]
    assert shown[-1] == "cannot read config: app.toml: no such file"
    assert shown[-2] == "loading part 39" and "loading part 0" not in shown   # the last lines only
    rep = json.loads(out.read_text())
    assert any("cannot read config" in n for n in rep["notes"]), rep["notes"]
    assert "cannot read config" in r.stdout                 # the report shows the note too


def test_the_ptrace_backend_keeps_the_output_out_too(tmp_path):
    require("strace", "ptrace")
    out = tmp_path / "r.json"
    prog = ("import os, signal, time\nprint('serving', flush=True)\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "while True:\n    os.getppid(); time.sleep(0.01)\n")
    r = run([*SYSCALLS, "--backend", "ptrace", "--duration", "3", "--json", str(out), "--", PY, _script(tmp_path, prog)],
            timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "serving" not in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr
    rep = json.loads(out.read_text())
    assert {n["name"]: n["calls"] for n in rep["names"]}["getppid"] > 20
