"""Driving the real py-spy: ``py-spy record --format raw`` on a pid, and its failures in one line.

py-spy reads the target's memory from outside (process_vm_readv, which needs the same ptrace
access as attaching a debugger), so it works on any CPython process without injecting anything,
at the price of seeing threads only. The flags, and why:

- ``--full-filenames``: frames carry real paths (the loop-machinery folding matches on them).
- ``--nonblocking``: the target is never paused (py-spy's default stops every thread for each
  sample, for as long as the sample takes; ``--blocking`` restores it).
- ``--function``: a frame is labelled with its function's first line, not the line running.
  Each sample reads every frame of every thread, and the current line costs two more reads per
  frame (the code's line table). Every read takes the target's mmap_lock for reading, and a
  target that maps memory (stock asyncio's 256 KiB recv buffer: mmap + mremap + munmap per
  read) waits for it: fewer reads, less waiting (``benchmarks.flame_overhead``). Measured on
  the asyncio echo server at 100 Hz: 23% fewer reads (strace), py-spy's own CPU ~7.5% -> ~6%
  of a core. Shares per function are the same; flame graph boxes are per function, as in
  Brendan Gregg's. ``--lines`` (``lines=True``) asks for the running line again.
- ``--threads``: each stack starts with a ``thread (TID): NAME`` frame, which the folding
  turns into the stack's ``thread`` label (a pprof sample label) and drops from the frames.
- not ``--gil``: it would halve the reads (only the thread holding the GIL is walked) but
  drops on-CPU time spent in C with the GIL released (TLS, compression, hashing), which is CPU
  time a cpu-mode profile must show.

py-spy's errors are multi-line Rust backtraces; :func:`explain_failure` turns the ones users
hit into one line: no such process, not a Python process, no ptrace permission (naming what
is missing: CAP_SYS_PTRACE or kernel.yama.ptrace_scope).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from diag.errors import CoroscopeError, TargetGone
from diag.procfs import python_process

CAP_SYS_PTRACE = 19


def pyspy_executable() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.path.exists(exe):
        return exe
    found = shutil.which("py-spy")
    if not found:
        raise CoroscopeError("py-spy is not installed (pip install py-spy)")
    return found


def has_capability(cap: int, status_path: str = "/proc/self/status") -> bool:
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except OSError:
        pass
    return False


def ptrace_scope() -> int | None:
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def missing_ptrace_permission(pid: int) -> str:
    """One line naming why this process may not ptrace ``pid``."""
    reasons = []
    if not has_capability(CAP_SYS_PTRACE):
        reasons.append("this process lacks CAP_SYS_PTRACE")
    scope = ptrace_scope()
    if scope:
        reasons.append(f"kernel.yama.ptrace_scope={scope} (0 allows tracing your own processes)")
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.geteuid():
            reasons.append(f"pid {pid} belongs to another user")
    except OSError:
        pass
    why = "; ".join(reasons) or "the kernel refused ptrace access"
    return (f"no ptrace permission for pid {pid}: {why} "
            f"(run as root, or grant CAP_SYS_PTRACE: setcap cap_sys_ptrace+ep $(which py-spy))")


def looks_like_python(pid: int) -> bool | None:
    """True/False when /proc says so, None when we cannot tell (no permission)."""
    return python_process(pid)


def explain_failure(pid: int, stderr: str) -> str:
    text = stderr.lower()
    if not os.path.exists(f"/proc/{pid}"):
        return f"pid {pid} exited before py-spy could read it"
    if "permission denied" in text or "operation not permitted" in text or "os error 1)" in text:
        return missing_ptrace_permission(pid)
    if "failed to find python version" in text or "python interpreter" in text:
        return f"pid {pid} is not a Python process (py-spy found no CPython interpreter in it)"
    first = next((ln.strip() for ln in stderr.splitlines()
                  if ln.strip().startswith("Error:")), stderr.strip().splitlines()[-1:] or ["?"])
    return f"py-spy failed on pid {pid}: {first if isinstance(first, str) else first[0]}"


def parse_raw(text: str) -> dict[tuple[str, ...], float]:
    """py-spy's raw output; lines with an empty stack (a process exiting) are dropped."""
    out: dict[tuple[str, ...], float] = {}
    for line in text.splitlines():
        stack, sep, count = line.strip().rpartition(" ")
        if not sep or not stack:
            continue
        try:
            weight = float(count)
        except ValueError:
            continue
        key = tuple(stack.split(";"))
        out[key] = out.get(key, 0.0) + weight
    return out


class PySpyResult:
    def __init__(self, stacks, samples_line: str, target_exited: bool, elapsed: float):
        self.stacks = stacks                # collapsed stacks -> samples
        self.samples_line = samples_line    # py-spy's own "Samples: N Errors: M"
        self.target_exited = target_exited  # sampling stopped because the target went away
        self.elapsed = elapsed


def record_command(pid: int, output: str, rate: float = 100, idle: bool = False,
                   blocking: bool = False, lines: bool = False,
                   subprocesses: bool = False) -> list[str]:
    """The py-spy command line coroscope runs (the overhead benchmark runs exactly this)."""
    cmd = [pyspy_executable(), "record", "--pid", str(pid), "--format", "raw", "-o", output,
           "--full-filenames", "--threads", "--rate", str(int(rate))]
    if not lines:
        cmd.append("--function")
    if idle:
        cmd.append("--idle")
    if subprocesses:                  # a pre-fork master: its workers too (diag.workers)
        cmd.append("--subprocesses")
    if not blocking:
        cmd.append("--nonblocking")
    return cmd


def record(pid: int, duration: float | None, rate: float = 100, idle: bool = False,
           blocking: bool = False, stop_when=None, startup_grace: float = 0.0,
           lines: bool = False, subprocesses: bool = False) -> PySpyResult:
    """Run ``py-spy record`` on ``pid`` and return its stacks.

    ``duration`` None records until the target exits or ``stop_when()`` returns True (checked
    every 0.1 s); then py-spy gets SIGINT, on which it writes what it has. ``startup_grace``:
    seconds during which "no interpreter found" means "not started yet" and py-spy is retried.
    """
    if not os.path.exists(f"/proc/{pid}"):
        raise TargetGone(f"no process with pid {pid}")
    if looks_like_python(pid) is False:
        raise CoroscopeError(f"pid {pid} is not a Python process "
                             f"({os.path.basename(os.readlink(f'/proc/{pid}/exe'))})")
    give_up_at = time.monotonic() + startup_grace
    while True:
        stacks, messages, elapsed, written = _record_once(pid, duration, rate, idle, blocking,
                                                          stop_when, lines, subprocesses)
        if written:
            break
        # a process that has just exec'd has no interpreter yet for py-spy to find: retry
        starting = "failed to find python version" in messages.lower()
        if starting and time.monotonic() < give_up_at and os.path.exists(f"/proc/{pid}") \
                and not (stop_when is not None and stop_when()):
            time.sleep(0.2)
            continue
        raise CoroscopeError(explain_failure(pid, messages))
    samples_line = next((ln.split("Samples:", 1)[1].strip() for ln in messages.splitlines()
                         if "Samples:" in ln), "")
    exited = "process exited" in messages or not os.path.exists(f"/proc/{pid}")
    return PySpyResult(stacks, samples_line, exited, elapsed)


def _record_once(pid, duration, rate, idle, blocking, stop_when, lines, subprocesses=False):
    """One py-spy run: (stacks, py-spy's messages, seconds, whether it wrote a profile)."""
    with tempfile.TemporaryDirectory(prefix="coroscope-pyspy-") as tmp:
        out = os.path.join(tmp, "raw.txt")
        cmd = record_command(pid, out, rate, idle=idle, blocking=blocking, lines=lines,
                             subprocesses=subprocesses)
        if duration is not None:
            cmd += ["--duration", str(max(1, int(round(duration))))]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
        try:
            if duration is None and stop_when is not None:
                while proc.poll() is None:
                    if stop_when():
                        proc.send_signal(signal.SIGINT)
                        break
                    time.sleep(0.1)
            stdout, stderr = proc.communicate(timeout=None if duration is None else duration + 30)
        except BaseException:
            # interrupted (Ctrl-C): py-spy writes what it has on SIGINT; keep it if it did
            proc.send_signal(signal.SIGINT)
            try:
                stdout, stderr = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            if not os.path.exists(out):
                raise
        elapsed = time.monotonic() - start
        messages = (stdout or "") + (stderr or "")
        if not os.path.exists(out):
            return {}, messages, elapsed, False
        with open(out, encoding="utf-8", errors="replace") as f:
            return parse_raw(f.read()), messages, elapsed, True
