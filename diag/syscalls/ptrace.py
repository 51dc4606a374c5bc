"""The fallback backend: ptrace, through strace, for machines where eBPF cannot run.

Why strace and ptrace: ptrace stops the thread at every syscall, so nothing is missed and the
counts per thread are exact (per-thread perf counters are exact too, but they need one counter
per syscall name and perf_event_paranoid permits tracepoint counters to root only, the very
case this backend exists for). It works without root for a process we start, and for any
process the user may ptrace. strace is the well-kept tool that does it; we parse its output.

What it cannot do: tell which request or task made a call. It sees the thread only, so the
report charges every call to its thread and gives per-request figures as amortized counts
(all calls divided by the requests done, from the probe file). It also slows the target
(a stop per syscall): timings per call are strace's and include that overhead.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from ..errors import CoroscopeError
from .counts import THREAD, RawCounts

CANNOT_ATTRIBUTE = (
    "the ptrace backend sees threads, not requests or tasks: counts per thread are exact, "
    "figures per request are amortized (all calls / requests done)"
)

# "1234 read(3, ""..., 262144) = 64 <0.000012>", "1234 <... read resumed>...) = -1 EAGAIN (...) <...>"
_LINE = re.compile(r"^(?P<tid>\d+)\s+(?P<rest>.*)$")
_CALL = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)\(")
_RESUMED = re.compile(r"^<\.\.\. (?P<name>[a-z_][a-z0-9_]*) resumed>")
_RESULT = re.compile(
    r"=\s+(?P<ret>-?\d+|0x[0-9a-f]+|\?)(?:\s+(?P<errno>E[A-Z0-9]+)\s+\(.*?\))?.*?(?:<(?P<time>[\d.]+)>)?\s*$"
)
_SIZED_READ = re.compile(r"^(?:read|pread64|recvfrom)\(\d+,\s*(?:\".*?\"(?:\.\.\.)?|0x[0-9a-f]+|NULL),\s*(\d+)")
_READ_LIKE = {"read", "pread64", "readv", "recvfrom", "recvmsg"}
_POLL_LIKE = {"poll", "ppoll", "select", "pselect6", "epoll_wait", "epoll_pwait", "epoll_pwait2"}


def strace_path() -> str:
    path = shutil.which("strace")
    if not path:
        raise CoroscopeError("the ptrace backend needs strace, which is not installed (apt-get install strace)")
    return path


def strace_argv(out: Path, *, pid: int | None = None, cmd: list[str] | None = None) -> list[str]:
    """-f: every thread; -T: time in the call; -qq: no attach chatter; -s 0: no string contents."""
    argv = [strace_path(), "-f", "-qq", "-T", "-s", "0", "-e", "signal=none", "-o", str(out)]
    if pid is not None:
        argv += ["-p", str(pid)]
    else:
        argv += ["--", *cmd]
    return argv


def parse_strace(lines, raw: RawCounts) -> None:
    """Add strace -f -T output lines to ``raw`` (buckets per thread). Exact: one count per call entry."""
    import errno as errno_mod

    for line in lines:
        m = _LINE.match(line)
        if not m:
            continue
        tid, rest = int(m.group("tid")), m.group("rest")
        if rest.startswith(("+++", "---")):
            continue
        resumed = _RESUMED.match(rest)
        if resumed:
            name = resumed.group("name")
        else:
            call = _CALL.match(rest)
            if not call:
                continue
            name = call.group("name")
            cell = raw.cell((THREAD, tid), name)
            cell.count += 1
            sized = _SIZED_READ.match(rest)
            if sized:
                cell.max_request_size = max(cell.max_request_size, int(sized.group(1)))
            if rest.endswith("<unfinished ...>"):
                continue
        result = _RESULT.search(rest)
        if not result:
            continue  # a call that never returned (exit_group) or was cut at detach
        cell = raw.cell((THREAD, tid), name)
        if result.group("time"):
            cell.time_ns += int(float(result.group("time")) * 1e9)
            cell.timed += 1
        ret = result.group("ret")
        if result.group("errno"):
            code = getattr(errno_mod, result.group("errno"), None)
            if code is None:
                continue
            cell.errors[code] = cell.errors.get(code, 0) + 1
        elif ret.lstrip("-").isdigit() and int(ret) > 0 and (name in _READ_LIKE or name in _POLL_LIKE):
            cell.returned += int(ret)


class StraceSession:
    """strace attached to a pid, or running a command; ``stop`` detaches and returns the counts."""

    def __init__(self, *, pid: int | None = None, cmd: list[str] | None = None, env=None,
                 output: int | None = None):
        """``output``: with ``cmd``, the fd its stdout and stderr (and strace's) go to."""
        self._tmp = tempfile.TemporaryDirectory(prefix="coroscope-strace-")
        self.out = Path(self._tmp.name) / "trace"
        self.proc = subprocess.Popen(
            strace_argv(self.out, pid=pid, cmd=cmd), env=env,
            stdin=subprocess.DEVNULL,
            stdout=output if pid is None else None,
            stderr=subprocess.PIPE if pid is not None else output,
            start_new_session=pid is None,
            text=True,
        )

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def stop(self, raw: RawCounts, *, detach: bool = True) -> int | None:
        """Detach (SIGINT makes strace detach cleanly), then parse. Returns strace's exit code."""
        if detach and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        if self.out.exists():
            with open(self.out, encoding="utf-8", errors="replace") as f:
                parse_strace(f, raw)
        self._tmp.cleanup()
        return rc

    def error_text(self) -> str:
        if self.proc.stderr is None:
            return ""
        try:
            return self.proc.stderr.read().strip().splitlines()[-1] if self.proc.poll() is not None else ""
        except (IndexError, ValueError, OSError):
            return ""


def ptrace_allowed(pid: int) -> bool:
    """Whether we may ptrace-attach to pid: root, or same user with Yama's scope 0."""
    if os.geteuid() == 0:
        return True
    try:
        scope = int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text())
    except (OSError, ValueError):
        scope = 0
    try:
        same_user = os.stat(f"/proc/{pid}").st_uid == os.geteuid()
    except OSError:
        return False
    return same_user and scope == 0
