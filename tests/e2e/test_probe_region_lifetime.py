"""The probe region is private to its owner and gone with its process however it dies.

A traced process publishes its probe region as an anonymous memfd (``runtime.probefile``,
"Where the region lives"): no name in /dev/shm or /tmp, freed by the kernel with the process.
Here real traced processes die by SIGTERM (Python's default action: no atexit), SIGKILL,
os._exit and a segfault, and a hundred forked traced children are started and killed; /dev/shm
and /tmp hold nothing of any of them afterwards. While a traced process runs, uid 65534 (nobody)
can neither find nor open its region, where its owner (root here) reads request names from it.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diag.errors import CoroscopeError
from diag.probe import ProbeReader
from runtime import probefile as pf
from tests.capabilities import require

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
DIRS = ("/dev/shm", "/tmp")
SECRET = "GET /users/4242?token=s3cr3t"

TRACED = textwrap.dedent(f"""
    import os, sys, time
    from runtime import tracing
    from runtime.requests import request
    tracing.enable()
    r = request({SECRET!r}).__enter__()       # running: in the table of live requests
    print("ready", flush=True)
    how = sys.stdin.readline().strip()
    if how == "exit":
        os._exit(3)
    if how == "crash":
        import ctypes
        ctypes.string_at(0)                    # SIGSEGV
    time.sleep(60)
""")


def _listing() -> set[str]:
    return {f"{d}/{name}" for d in DIRS for name in os.listdir(d)}


def _ours(paths: set[str], pids) -> set[str]:
    """New entries that name one of our processes (as every file a process names after
    itself does, the probe files before the memfd among them); the machine is shared, and
    other programs' files come and go meanwhile."""
    pids = {str(p) for p in pids}
    return {p for p in paths if pids & set(re.findall(r"\d+", p.rsplit("/", 1)[1]))}


def _start() -> subprocess.Popen:
    proc = subprocess.Popen([PY, "-c", TRACED], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("death", ["SIGTERM", "SIGKILL", "os._exit", "crash"])
def test_nothing_is_left_behind_however_the_process_dies(death):
    before = _listing()
    proc = _start()
    try:
        with ProbeReader.attach(proc.pid) as reader:      # the region is there while it runs
            names = [reader.string(sid) for _parent, sid, _ns in
                     pf.read_live(reader.mm, reader.layout).values()]
        assert names == [SECRET]
        if death in ("SIGTERM", "SIGKILL"):
            proc.send_signal(getattr(signal, death))
        else:
            proc.stdin.write({"os._exit": "exit", "crash": "crash"}[death] + "\n")
            proc.stdin.flush()
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert status == {"SIGTERM": -signal.SIGTERM, "SIGKILL": -signal.SIGKILL, "os._exit": 3,
                      "crash": -signal.SIGSEGV}[death]
    assert _ours(_listing() - before, [proc.pid]) == set()


CYCLES = textwrap.dedent("""
    import os, signal, sys, time
    from runtime import probefile as pf, tracing
    tracing.enable()
    pids = []
    for i in range(int(sys.argv[1])):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                       # a traced process: its own region, made at the fork
            os.close(r)
            ok = [pf.parse_header(tracing.writer().mm).pid] == [os.getpid()]
            os.write(w, b"1" if ok and pf.region_paths(os.getpid()) else b"0")
            time.sleep(60)
            os._exit(0)
        os.close(w)
        assert os.read(r, 1) == b"1", "a child had no region of its own"
        os.close(r)
        os.kill(pid, (signal.SIGKILL, signal.SIGTERM)[i % 2])
        os.waitpid(pid, 0)
        pids.append(pid)
    print(os.getpid(), " ".join(map(str, pids)), flush=True)
""")


def test_a_hundred_start_kill_cycles_leave_shm_and_tmp_as_before():
    before = _listing()
    out = subprocess.run([PY, "-c", CYCLES, "100"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    parent, *pids = [int(p) for p in out.stdout.split()]
    assert len(set(pids)) == 100
    pids.append(parent)
    assert _ours(_listing() - before, pids) == set()


def test_another_user_cannot_read_a_running_process_region():
    require("root")
    from tests.test_fds_inventory import _in_unprivileged_child

    proc = _start()
    try:
        with ProbeReader.attach(proc.pid):                # its owner (root) can
            pass

        def as_nobody():
            try:
                pf.region_paths(proc.pid)
                return 1                                   # could list its fds
            except PermissionError:
                pass
            try:
                ProbeReader.attach(proc.pid)
                return 2
            except CoroscopeError as exc:
                os.write(2, f"{exc}\n".encode())
            for d in DIRS:                                 # and nothing named to open instead
                for name in os.listdir(d):
                    if "coroscope" in name and str(proc.pid) in name:
                        return 3
            return 0

        code, err = _in_unprivileged_child(as_nobody)
    finally:
        proc.kill()
        proc.wait()
    assert code == 0, err
    assert err.strip() == (f"no permission to read pid {proc.pid}'s probe region (it is private "
                           "to its user: run as that user or as root)")
