"""The live fd inventory: kinds and details of real fds, and a target that moves under the scan."""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from diag.errors import CoroscopeError, TargetGone
from diag.fds.inventory import count_kinds, scan

HOLDER = textwrap.dedent("""
    import os, sys
    n = int(sys.argv[1])
    fds = []
    for _ in range(n):
        fds.extend(os.pipe())
    print(" ".join(map(str, fds)), flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "close":
            for fd in map(int, arg.split()):
                os.close(fd)
            print("closed", flush=True)
""")


@pytest.fixture
def holder():
    """A child process holding 2 * n pipe fds; it closes the fds it is told to on stdin."""
    procs = []

    def start(n: int):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(n)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        fds = [int(x) for x in proc.stdout.readline().split()]
        return proc, fds

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


def test_every_kind_with_its_detail():
    opened = []
    try:
        efd = os.eventfd(5)
        r, w = os.pipe()
        ep = select.epoll()
        ep.register(efd, select.EPOLLIN)
        ep.register(r, select.EPOLLIN)
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        server_side, _ = listener.accept()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        ua, ub = socket.socketpair()
        mfd = os.memfd_create("inventory-test")
        f = open(__file__, "rb")
        opened = [efd, r, w, mfd]
        rows = {row.fd: row for row in scan().rows}

        assert rows[efd].kind == "eventfd" and rows[efd].info["count"] == 5
        assert rows[ep.fileno()].kind == "epoll"
        assert sorted(wt["fd"] for wt in rows[ep.fileno()].info["watches"]) == sorted([efd, r])
        assert rows[r].kind == rows[w].kind == "pipe"
        port = listener.getsockname()[1]
        assert rows[listener.fileno()].kind == "tcp"
        assert rows[listener.fileno()].info["state"] == "LISTEN"
        assert rows[listener.fileno()].info["local"] == f"127.0.0.1:{port}"
        assert rows[client.fileno()].info == {"local": f"127.0.0.1:{client.getsockname()[1]}",
                                              "remote": f"127.0.0.1:{port}", "state": "ESTABLISHED"}
        assert rows[server_side.fileno()].info["state"] == "ESTABLISHED"
        assert rows[udp.fileno()].kind == "udp"
        assert rows[udp.fileno()].info["local"] == f"127.0.0.1:{udp.getsockname()[1]}"
        assert rows[ua.fileno()].kind == rows[ub.fileno()].kind == "unix"
        assert rows[ua.fileno()].info["state"] == "CONNECTED"
        assert rows[mfd].kind == "memfd"
        assert rows[f.fileno()].kind == "file" and rows[f.fileno()].target == os.path.abspath(__file__)
        for s in (listener, client, server_side, udp, ua, ub, f):
            s.close()
        ep.close()
    finally:
        for fd in opened:
            os.close(fd)


def test_other_process_counts_are_exact(holder):
    proc, fds = holder(50)
    inv = scan(proc.pid)
    pipes = {row.fd for row in inv.rows if row.kind == "pipe"}
    assert set(fds) <= pipes
    assert count_kinds(proc.pid)["pipe"] == len(pipes)
    assert inv.complete and inv.closed_while_reading == 0


def test_pid_gone_mid_scan_keeps_partial_inventory(holder):
    proc, fds = holder(200)

    def kill_at_50(n):
        if n == 50:
            proc.kill()
            proc.wait()              # reaped: /proc/PID is gone

    inv = scan(proc.pid, progress=kill_at_50)
    assert not inv.complete
    assert len(inv.rows) == 50
    assert len(inv.notices) == 1
    assert inv.notices[0].startswith(f"process {proc.pid} exited during the scan: 50 of ")
    listed = int(inv.notices[0].split(" of ")[1].split()[0])
    assert listed >= len(fds) + 3     # stdin, stdout, stderr and the pipes were all listed


def test_fds_closing_while_read_are_counted_not_errors(holder):
    proc, fds = holder(200)
    doomed = sorted(fds)[-100:]      # the highest numbers: listed, then closed before being read

    def close_at_10(n):
        if n == 10:
            proc.stdin.write("close " + " ".join(map(str, doomed)) + "\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "closed"

    inv = scan(proc.pid, progress=close_at_10)
    assert inv.complete
    assert inv.closed_while_reading == 100
    assert "100 fds closed while being read (skipped)" in inv.notices
    assert not set(doomed) & {row.fd for row in inv.rows}


def test_no_such_process():
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(TargetGone, match=f"no such process: {proc.pid}"):
        scan(proc.pid)


def _in_unprivileged_child(func, preload: tuple[str, ...] = ()) -> tuple[int, str]:
    """Run func() in a forked child that dropped root (uid 65534); returns (exit status, its stderr).

    ``preload``: modules imported before root is dropped. The checkout, the virtual environment
    or the interpreter's own library may sit where uid 65534 cannot read (a clone inside a 0700
    home); what was imported before the fork, or here, is all the child can use."""
    import importlib
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.dup2(w, 2)
            sys.stderr = open(2, "w", closefd=False)
            for name in preload:
                importlib.import_module(name)
            os.setgid(65534)
            os.setuid(65534)
            code = func()
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            os.write(2, f"unexpected {type(exc).__name__}: {exc}\n".encode())
            code = 99
        sys.stderr.flush()
        os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


# what `coroscope fds --pid` imports on its way to the permission error
CLI_FDS_MODULES = ("diag.cli", "diag.fds.command_fds", "diag.fds.inventory", "diag.fds.render",
                   "diag.fds.probe_origins", "diag.probe", "diag.workers", "asyncio")


def test_another_users_process_without_permission():
    from tests.capabilities import require
    require("root")
    target = os.getpid()          # root's process, seen from uid 65534

    def scan_it():
        try:
            scan(target)
        except CoroscopeError as exc:
            os.write(2, f"{exc}\n".encode())
            return 7
        return 0

    code, err = _in_unprivileged_child(scan_it)
    assert code == 7
    assert err == (f"permission denied reading /proc/{target}/fd (process owned by uid 0; "
                   "run coroscope as that user or as root)\n")

    def cli():
        from diag.cli import main
        return main(["fds", "--pid", str(target)])

    code, err = _in_unprivileged_child(cli, preload=CLI_FDS_MODULES)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("coroscope: error: permission denied reading")
