"""``coroscope fds --pid`` of a live traced process: opening stacks from its probe file."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.capabilities import run

ROOT = Path(__file__).resolve().parents[2]

TARGET = textwrap.dedent("""
    import os, socket, sys
    import runtime.tracing as tracing
    from diag.fds import fdtrack
    if sys.argv[1] == "traced":
        tracing.enable()
        fdtrack.install()
    def make_notifier():
        return os.eventfd(7)
    notifier = make_notifier()
    server = socket.create_server(("127.0.0.1", 0))
    print(notifier, server.fileno(), flush=True)
    sys.stdin.readline()
""")


def _start(tmp_path, mode):
    script = tmp_path / "target.py"
    script.write_text(TARGET)
    proc = subprocess.Popen([sys.executable, str(script), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    efd, sfd = map(int, proc.stdout.readline().split())
    return proc, script, efd, sfd


def _stop(proc):
    proc.stdin.close()
    proc.wait(10)
    proc.stdout.close()


def test_stacks_come_from_the_probe_file(tmp_path):
    proc, script, efd, sfd = _start(tmp_path, "traced")
    try:
        out = run([sys.executable, "-m", "diag.cli", "fds", "--pid", str(proc.pid), "--json"], cwd=ROOT)
    finally:
        _stop(proc)
    assert out.returncode == 0, out.stderr
    inv = json.loads(out.stdout)
    rows = {row["fd"]: row for row in inv["rows"]}
    assert inv["stacks"] == "probe"
    assert rows[efd]["kind"] == "eventfd" and rows[efd]["info"]["count"] == 7
    site = rows[efd]["origin"]["site"]
    assert (site["file"], site["line"], site["function"]) == (str(script), 9, "make_notifier")
    assert rows[sfd]["kind"] == "tcp" and rows[sfd]["info"]["state"] == "LISTEN"
    assert rows[sfd]["origin"]["site"]["line"] == 11


def test_untraced_process_says_there_are_no_stacks(tmp_path):
    proc, script, efd, sfd = _start(tmp_path, "plain")
    try:
        out = run([sys.executable, "-m", "diag.cli", "fds", "--pid", str(proc.pid)], cwd=ROOT)
    finally:
        _stop(proc)
    assert out.returncode == 0
    assert "opening stacks: none" in out.stdout
    assert f"notice: no opening stacks: pid {proc.pid} publishes no probe region" in out.stdout
    assert any(line.split()[:2] == [str(efd), "eventfd"] for line in out.stdout.splitlines())


def test_no_such_pid_one_line():
    gone = subprocess.Popen(["true"])
    gone.wait()
    out = run([sys.executable, "-m", "diag.cli", "fds", "--pid", str(gone.pid)], cwd=ROOT)
    assert (out.returncode, out.stderr) == (2, f"coroscope: error: no such process: {gone.pid}\n")
