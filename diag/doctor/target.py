"""Starting a service for doctor and check, finding where it listens, and stopping it.

The service is any command a user types (``uvicorn app:app``, ``gunicorn -w 2 ...``, ``python
-m aiohttp.web ...``, ``python server.py``), started with ``diag.bootstrap.target_environment``
so the start-up hook turns on what was asked for (the loop, tracepoints, fd tracking). Nothing
is asked of the service: where it listens is read from the sockets its process tree holds (a
LISTEN socket in /proc/PID/net/tcp whose inode is one of the tree's fds, the fd inventory's way:
a gunicorn master holds the socket its workers accept on). A ``listening on HOST:PORT`` line it
prints is only the fallback, for a socket /proc will not show us.

While we wait, what the service prints is kept (a thread drains the pipe, so a chatty service
never blocks on a full pipe), and every way of not coming up gets one line: it exited (with its
status and its last lines; "address already in use" said as such), or it never listened within
the timeout (with its last lines). Stopping is what a supervisor does: SIGTERM, then SIGKILL to
its whole session after a grace period, so a pre-fork master's workers never outlive it.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

from diag.errors import CoroscopeError, TargetGone
from diag.started import stop_process

_LISTENING = re.compile(r"listening on (?:https?://)?([\w.\-\[\]:]+?):(\d+)", re.I)
_IN_USE = re.compile(r"address already in use|errno 98\b", re.I)
TAIL_LINES = 5
STARTUP_TIMEOUT = 30.0     # seconds a service may take to listen (doctor --startup-timeout)


def expand_command(command: list[str], variables: dict[str, str] | None = None) -> list[str]:
    """``{python}`` is this interpreter, and so is a bare ``python`` or ``python3`` as the
    command (as ``coroscope run`` has it: the one coroscope is installed in); other ``{name}``
    come from ``variables``."""
    if command and command[0] in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        command = ["{python}", *command[1:]]
    values = {"python": sys.executable, **(variables or {})}
    out = []
    for part in command:
        try:
            out.append(part.format(**values))
        except KeyError as exc:
            raise CoroscopeError(f"unknown placeholder {exc} in command {' '.join(command)}") from None
    return out


def _socket_inodes(pid: int) -> list[int]:
    """Socket inodes of pid's fds, in fd order."""
    out = []
    try:
        fds = sorted(os.listdir(f"/proc/{pid}/fd"), key=int)
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.append(int(target[8:-1]))
    return out


def listening_addresses(pids: list[int]) -> list[tuple[str, int]]:
    """(host, port) of every TCP socket in LISTEN held by these processes, the first process's
    first. A wildcard address is given as the loopback one a client on this machine uses."""
    from diag.fds.inventory import read_socket_tables
    found: list[tuple[str, int]] = []
    for pid in pids:
        inodes = _socket_inodes(pid)
        if not inodes:
            continue
        table = read_socket_tables(pid)
        for inode in inodes:
            kind, info = table.get(inode, ("", {}))
            if not kind.startswith("tcp") or info.get("state") != "LISTEN":
                continue
            host, _, port = info["local"].rpartition(":")
            host = host.strip("[]")
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
            if (host, int(port)) not in found:
                found.append((host, int(port)))
    return found


class Target:
    """A service process started by coroscope."""

    def __init__(self, command: list[str], *, loop: str | None = None, trace: bool = False,
                 fdtrack: bool = False, env_extra: dict[str, str] | None = None,
                 startup_timeout: float | None = None):
        from diag.bootstrap import target_environment
        if not command:
            raise CoroscopeError("no command to run")
        env = target_environment(loop=loop, trace=trace, fdtrack=fdtrack)
        env.update(env_extra or {})
        env["PYTHONUNBUFFERED"] = "1"
        self.command = command
        self.loop = loop
        self.output: list[str] = []  # what the target printed (stdout and stderr merged)
        try:
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, text=True, bufsize=1,
                                         errors="replace", start_new_session=True)
        except OSError as exc:
            raise CoroscopeError(f"cannot start {command[0]}: {exc.strerror}") from None
        self.pid = self.proc.pid
        self._drain = threading.Thread(target=self._drain_output, daemon=True,
                                       name="coroscope-target-output")
        self._drain.start()
        self.found_by = ""
        try:
            self.host, self.port = self._wait_for_address(
                STARTUP_TIMEOUT if startup_timeout is None else startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _drain_output(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    def tail(self, n: int = TAIL_LINES) -> str:
        lines = [line.rstrip() for line in list(self.output)[-n:] if line.strip()]
        return " | ".join(lines)

    def tree(self) -> list[int]:
        from diag import workers
        try:
            return [self.pid, *workers.descendants(self.pid)]
        except CoroscopeError:
            return [self.pid]

    def _wait_for_address(self, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self._drain.join(timeout=2)
                tail = self.tail()
                if _IN_USE.search(tail):
                    raise TargetGone(f"the service could not listen: its address is already in use "
                                     f"(exit status {self.proc.returncode}): {tail}")
                raise TargetGone(f"the service exited with status {self.proc.returncode} before "
                                 f"listening{': ' + tail if tail else ' (it printed nothing)'}")
            addresses = listening_addresses(self.tree())
            if addresses:
                self.found_by = "its listening socket"
                return addresses[0]
            for line in list(self.output):
                match = _LISTENING.search(line)
                if match:
                    self.found_by = "the line it printed"
                    return match.group(1).strip("[]"), int(match.group(2))
            if time.monotonic() >= deadline:
                tail = self.tail()
                raise CoroscopeError(f"the service did not listen on any TCP port within {timeout:g} s"
                                     f"{'; its last lines: ' + tail if tail else ' and printed nothing'}")
            time.sleep(0.05)

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def serving_pids(self, settle: float = 0.0) -> list[int]:
        """The processes that serve: the service itself, or a pre-fork master's workers. With
        ``settle``, wait up to that long for every traced worker to have started serving (a
        pre-fork master opens its socket before its workers are up; the one that is not yet
        would be left out, and a request it serves uncounted)."""
        from diag import workers
        deadline = time.monotonic() + settle
        while True:
            try:
                found = workers.find(self.pid)
            except CoroscopeError:
                return [self.pid]
            if not found.pre_fork or time.monotonic() >= deadline \
                    or set(found.pids) >= set(workers.traced_below(self.pid)):
                return found.pids
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL to its session (what is left of its tree: a worker never
        outlives it); returns the exit status. Keeps its output."""
        stop_process(self.proc, ((signal.SIGTERM, grace),))
        if self.proc.poll() is None:
            self.proc.wait()
        drain = getattr(self, "_drain", None)
        if drain is not None:
            drain.join(timeout=2)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def raise_nofile_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE toward ``wanted`` (children inherit it)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft
