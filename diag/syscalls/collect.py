"""One measurement: pick the backend, find or start the target, count for a while, build the report.

The order of things matters for exactness when we start the target ourselves: the command is
started behind a gate (a tiny Python process that waits on a pipe, then execs the command, so
its pid is the target's pid), the eBPF program is compiled and attached for that pid, and only
then is the gate opened. Nothing the target does is missed, and the target's pid is known
before it runs a line.

Fallbacks are said out loud (``notes`` in the report and a line on stderr): no root or no bcc ->
the ptrace backend; no probe file -> per-thread counts.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import CoroscopeError, TargetGone
from ..started import Output, failed, failure_note, stop_pid, stop_process
from ..procfs import python_process
from ..model.syscalls import SyscallReport
from .aggregate import build_report
from .counts import REQUEST, TASK, THREAD, UNATTRIBUTED, RawCounts

REFRESH_S = 0.02          # how often thread slots and request names are refreshed
SWITCH_EVERY_S = 0.05     # how often the eBPF maps are drained (diag.syscalls.bpf)
BACKENDS = ("auto", "bpf", "ptrace")

# The gate: waits for one byte on fd argv[1], then becomes the command (same pid). -S -E: no
# site, no PYTHONPATH, so coroscope's sitecustomize does not run in the gate itself.
_GATE = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "os.read(fd, 1)\n"
    "os.close(fd)\n"
    "try:\n"
    "    os.execv(sys.argv[2], sys.argv[2:])\n"
    "except OSError as exc:\n"
    "    sys.stderr.write(f'coroscope: error: cannot run {sys.argv[2]}: {exc.strerror}\\n')\n"
    "    os._exit(127)\n"
)


def _stderr(line: str) -> None:
    print(f"coroscope: {line}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ targets
def start_ticks(pid: int) -> int | None:
    from runtime.probefile import process_start_ticks

    return process_start_ticks(pid)


def is_python(pid: int) -> bool:
    """A CPython process: its executable or a mapped library is python/libpython."""
    try:
        return bool(python_process(pid))
    except TargetGone:
        return False


def check_pid(pid: int) -> None:
    """One clear line for a pid we cannot measure."""
    if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
        raise CoroscopeError(f"no process with pid {pid}")
    try:
        os.readlink(f"/proc/{pid}/exe")
    except PermissionError:
        raise CoroscopeError(f"no permission to inspect pid {pid} (run as its user or as root)")
    except OSError:
        pass
    if not is_python(pid):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            name = "?"
        raise CoroscopeError(f"pid {pid} ({name}) is not a Python process")


def check_command(cmd: list[str]) -> None:
    import shutil

    if not shutil.which(cmd[0]):
        raise CoroscopeError(f"cannot run {cmd[0]}: no such command")


def alive(pid: int, ticks: int | None) -> bool:
    """The same process (pid and start time) still runs: a zombie waiting for its parent is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3]
    return state not in (b"Z", b"X") and start_ticks(pid) == ticks


def thread_name(pid: int, tid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class Launched:
    proc: subprocess.Popen
    gate_w: int | None      # write end of the gate pipe, None once opened
    output: Output          # its stdout and stderr, out of the report (diag.started)
    stopped: bool = False   # we asked it to end (its exit status is then not a failure)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_blocked(self, timeout: float = 5.0) -> None:
        """Until the gate sits in its read (so its own start-up is over before we count)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if Path(f"/proc/{self.pid}/syscall").read_text().startswith("0 "):
                    return
            except OSError:
                return          # not readable (not root): counting a little start-up is harmless
            time.sleep(0.002)

    def release(self) -> None:
        if self.gate_w is not None:
            try:
                os.write(self.gate_w, b"x")
            except OSError:
                pass
            os.close(self.gate_w)
            self.gate_w = None

    def stop(self) -> None:
        """End the command we started (SIGINT, SIGTERM, SIGKILL, each with grace)."""
        if self.proc.poll() is None:
            self.stopped = True
        stop_process(self.proc)

    def failure(self, after_s: float | None) -> str | None:
        """A note with its last lines if it ended on its own with a failure, else None."""
        status = self.proc.poll()
        if self.stopped or not failed(status):
            return None
        return failure_note("the command", status, self.output.tail(), after_s)

    def close(self) -> None:
        self.stop()
        self.output.close()


def launch_gated(cmd: list[str], env: dict[str, str]) -> Launched:
    import shutil

    exe = shutil.which(cmd[0]) or cmd[0]     # one execve, not one per PATH entry
    output = Output()
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-S", "-E", "-c", _GATE, str(r), exe, *cmd[1:]],
                            env=env, pass_fds=(r,), stdin=subprocess.DEVNULL, stdout=output.fileno(),
                            stderr=output.fileno(), start_new_session=True)
    os.close(r)
    return Launched(proc, w, output)


def target_env(loop: str | None) -> dict[str, str]:
    from ..bootstrap import target_environment

    return target_environment(loop=loop, trace=True)


# ------------------------------------------------------------------------------------ backends
def bpf_unavailable() -> str | None:
    """Why eBPF cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root: eBPF needs root"
    try:
        from diag.syscalls.bcc_module import import_bcc
        import_bcc()
    except Exception as exc:
        return f"bcc is not importable ({exc.__class__.__name__}: {exc})"
    if not os.path.exists("/sys/kernel/tracing/events/raw_syscalls") and not os.path.exists(
            "/sys/kernel/debug/tracing/events/raw_syscalls"):
        return "tracefs is not mounted"
    return None


def choose_backend(requested: str, notify: Callable[[str], None]) -> tuple[str, list[str]]:
    if requested not in BACKENDS:
        raise CoroscopeError(f"unknown backend {requested!r} (choose from {', '.join(BACKENDS)})")
    why = bpf_unavailable()
    if requested == "bpf" and why:
        raise CoroscopeError(f"the bpf backend cannot run: {why}")
    if requested == "auto" and why:
        note = f"{why}; using the ptrace backend (exact per thread, requests amortized)"
        notify(note)
        return "ptrace", [note]
    return ("bpf" if requested == "auto" else requested), []


# ------------------------------------------------------------------------------------ measuring
@dataclass
class Window:
    """The requests a measurement counts, from the target's probe file, if it has one.

    The window's edges are read from state the target keeps current in its probe file (the
    request counters and the table of requests running: ``runtime.probefile``, "Requests a
    window counts"), never from the ring, so which requests it holds does not depend on this
    reader keeping up: a window holds the requests that began after ``start`` and ended before
    ``end``. The ring is followed only for names."""

    pid: int
    by: str
    view: object = None
    opened_late: bool = False  # first opened after the target ran a while (--pid)
    start: object = None       # the RequestEdge at the window's start; None: the target's start
    end: object = None         # ... at its end
    start_ns: int = 0          # monotonic ns of the start edge

    def poll(self, counter=None) -> None:
        from .slots import NoProbeFile, ProbeView

        if self.view is None:
            try:
                self.view = ProbeView.open(self.pid)
            except NoProbeFile:
                return
        if counter is not None and self.by in (REQUEST, TASK):
            counter.set_slots(self.view.slot_addresses(self.by))
        self.view.follow_requests()
        self.view.name_live_requests()

    def open_edge(self) -> None:
        """The window starts now (called as the counter starts counting)."""
        self.start_ns = time.monotonic_ns()
        if self.view is not None:
            self.view.skip_to_now()        # records before the window are no loss of its own
            self.start = self.view.edge()
            self.start_ns = self.start.ns_after

    def close_edge(self) -> None:
        """The window ends now (called just before the counter stops counting)."""
        if self.view is not None:
            self.view.follow_requests()
            self.view.name_live_requests()
            self.end = self.view.edge()

    def request_window(self):
        from .counts import RequestWindow

        if self.end is None:
            return None
        start = self.start
        first_after = start.last_id if start else 0
        begun = self.end.begun - (start.begun if start else 0)
        running = set(self.end.live)
        running_new = sum(1 for rid in running if first_after < rid <= self.end.last_id)
        return RequestWindow(
            first_after=first_after, last_id=self.end.last_id, running_at_end=running,
            count=max(0, begun - running_new),
            unlisted=self.end.unlisted - (start.unlisted if start else 0),
            start_ns=self.start_ns, end_ns=self.end.ns_before)

    def fill(self, raw: RawCounts) -> None:
        if self.view is None:
            return
        self.view.follow_requests()
        window = self.request_window()
        raw.window = window
        if window is not None:
            raw.requests_done = window.count
        raw.request_names.update(self.view.request_names)
        for task, name in self.view.task_names.items():
            raw.bucket_names[(TASK, task)] = name
        raw.loop = self.view.header.loop_kind or None
        if window is not None and window.unlisted:
            raw.notes.append(f"{window.unlisted} requests began while the target's table of running "
                             f"requests was full: the window's count of requests may be off by "
                             f"as many")
        if self.view.records_lost:
            unnamed = 0
            if window is not None:
                names = raw.request_names
                unnamed = sum(1 for rid in range(window.first_after + 1, window.last_id + 1)
                              if rid not in names and window.holds(rid))
            raw.notes.append(
                f"{self.view.records_lost} probe records were overwritten before they were read: "
                + (f"{unnamed} of the window's {window.count} requests have no name; "
                   if window is not None else "some request names are missing; ")
                + "every count is exact")

    def close(self) -> None:
        if self.view is not None:
            self.view.close()


def _wait_loop(deadline: float | None, done: Callable[[], bool], tick: Callable[[], None]) -> bool:
    """Tick until done() or the deadline; True if the target ended first. Ctrl-C ends the window."""
    try:
        while True:
            if done():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            tick()
            time.sleep(REFRESH_S)
    except KeyboardInterrupt:
        return False


def measure_bpf(*, pid: int | None, cmd: list[str] | None, duration: float | None, by: str,
                loop: str | None, notify: Callable[[str], None], notes: list[str]) -> tuple[RawCounts, int]:
    from .bpf import BpfCounter, BpfOptions

    launched = None
    if cmd:
        launched = launch_gated(cmd, target_env(loop))
        launched.wait_blocked()
        pid = launched.pid
    ticks = start_ticks(pid)
    window = Window(pid, by, opened_late=launched is None)
    eff_by = by
    if launched is None and by != THREAD:
        window.poll()
        if window.view is None:
            from .slots import NoProbeFile, ProbeView
            try:
                ProbeView.open(pid).close()
                reason = "no probe region"
            except NoProbeFile as exc:
                reason = str(exc)
            note = f"{reason}; counting per thread instead"
            notify(note)
            notes.append(note)
            eff_by = THREAD
    raw = RawCounts(backend="bpf", by=eff_by)
    version = PythonVersion(raw, pid, running=launched is None)
    try:
        counter = BpfCounter(BpfOptions(tgid=pid, by=eff_by), counting=launched is not None)
    except Exception as exc:
        if launched:
            launched.proc.kill()
            launched.close()
        raise CoroscopeError(f"eBPF program failed to load: {str(exc).splitlines()[0] if str(exc) else exc!r}")

    def tick() -> None:
        window.poll(counter if eff_by != THREAD else None)
        if counter.due(SWITCH_EVERY_S):
            counter.switch(raw)
        version.learn(window)

    t0 = time.monotonic()
    try:
        if launched:
            window.open_edge()         # from the target's start: the counter counts already
            launched.release()
            done = lambda: launched.proc.poll() is not None  # noqa: E731
        else:
            window.poll(counter if eff_by != THREAD else None)   # slots known before counting
            counter.open()
            window.open_edge()
            notify(f"counting syscalls of pid {pid} by {eff_by} (bpf)"
                   f"{'' if duration is None else f' for {duration:g} s'}")
            done = lambda: not alive(pid, ticks)  # noqa: E731
        t0 = time.monotonic()
        ended = _wait_loop(None if duration is None else t0 + duration, done, tick)
        window.close_edge()
        counter.finish(raw)        # the window ends here: what a command does once asked to end is not in it
        raw.duration_s = time.monotonic() - t0
        window.fill(raw)
        if raw.overflowed:
            raw.notes.append(f"{raw.overflowed} syscalls could not be charged to their request or "
                             f"task (the eBPF maps were full between two drains): they are in the "
                             f"totals, and the per-request figures may be short by as many")
        if launched and not ended:
            launched.stop()
        if launched and launched.failure(raw.duration_s):
            notes.append(launched.failure(raw.duration_s))
            notify(notes[-1])
        if ended and launched is None:
            raw.complete = False
            notes.append(f"pid {pid} exited after {raw.duration_s:.1f} s: the report covers what was counted until then")
            notify(notes[-1])
    finally:
        counter.close()
        window.close()
        if launched:
            launched.close()
    if eff_by != THREAD and window.view is None:
        # The target never published a probe region: its calls are all on "unattributed" threads.
        note = "the target published no probe region (not a traced Python program?); counting per thread"
        notify(note)
        notes.append(note)
        relabel_threads(raw)
    name_threads(raw, pid)
    return raw, pid


class PythonVersion:
    """The target's CPython version, for the hints that depend on it: read at once for a process
    that already runs (so the window does not start later for it), or once the command we
    started runs Python (its probe file is there). One try: the read walks maps and symbols."""

    def __init__(self, raw: RawCounts, pid: int, *, running: bool) -> None:
        self.raw, self.pid, self.tried = raw, pid, False
        if running:
            self._read()

    def _read(self) -> None:
        from ..backtrace.reader import python_version

        self.tried = True
        if self.pid:
            self.raw.python = python_version(self.pid)

    def learn(self, window: Window) -> None:
        if not self.tried and window.view is not None:
            self._read()


def relabel_threads(raw: RawCounts) -> None:
    cells = {}
    for (kind, ident), names in raw.cells.items():
        cells[(THREAD if kind == UNATTRIBUTED else kind, ident)] = names
    raw.cells = cells
    raw.by = THREAD
    raw.sequences.clear()


def name_threads(raw: RawCounts, pid: int) -> None:
    for kind, ident in raw.cells:
        if kind in (THREAD, UNATTRIBUTED):
            raw.bucket_names[(kind, ident)] = thread_name(pid, ident)


def measure_ptrace(*, pid: int | None, cmd: list[str] | None, duration: float | None, by: str,
                   loop: str | None, notify: Callable[[str], None], notes: list[str]) -> tuple[RawCounts, int]:
    from .ptrace import CANNOT_ATTRIBUTE, StraceSession, ptrace_allowed

    raw = RawCounts(backend="ptrace", by=THREAD, cannot_attribute=CANNOT_ATTRIBUTE)
    if by != THREAD:
        notes.append(f"counts by {by} need the bpf backend; the ptrace backend counts per thread")
    if pid is not None:
        if not ptrace_allowed(pid):
            raise CoroscopeError(f"no permission to trace pid {pid} (ptrace needs the same user, or root)")
        session = StraceSession(pid=pid)
        deadline = time.monotonic() + 10
        while not _traced(pid):
            if session.exited() or time.monotonic() > deadline:
                session.stop(raw, detach=False)
                raise CoroscopeError(f"strace could not attach to pid {pid}: {session.error_text() or 'timed out'}")
            time.sleep(0.01)
        target_pid = pid
    else:
        output = Output()
        session = StraceSession(cmd=cmd, env=target_env(loop), output=output.fileno())
        target_pid = None
        deadline = time.monotonic() + 10
        while target_pid is None and not session.exited() and time.monotonic() < deadline:
            target_pid = _first_child(session.proc.pid)
            time.sleep(0.005)
    ticks = start_ticks(target_pid) if target_pid else None
    window = Window(target_pid or 0, THREAD, opened_late=cmd is None)
    window.poll()
    if cmd is None:
        window.open_edge()
        notify(f"counting syscalls of pid {pid} by thread (ptrace){'' if duration is None else f' for {duration:g} s'}")
    t0 = time.monotonic()
    if target_pid:
        if cmd:
            done = session.exited
        else:
            done = lambda: not alive(target_pid, ticks) or session.exited()  # noqa: E731
        version = PythonVersion(raw, target_pid, running=cmd is None)
        ended = _wait_loop(None if duration is None else t0 + duration, done,
                           lambda: (window.poll(), version.learn(window)))
    else:
        ended = True
    window.close_edge()
    raw.duration_s = time.monotonic() - t0
    if cmd and target_pid:
        if not ended:                        # the command we started: end it, strace follows
            stop_pid(target_pid, lambda: not alive(target_pid, ticks) or session.exited())
        else:
            session.proc.wait()
            if failed(session.proc.returncode):   # strace exits with the command's status
                notes.append(failure_note("the command", session.proc.returncode, output.tail(),
                                          raw.duration_s))
                notify(notes[-1])
    elif cmd and session.exited() and failed(session.proc.returncode):
        notes.append(failure_note("the command", session.proc.returncode, output.tail()))
        notify(notes[-1])
    if cmd is None and ended:
        raw.complete = False
        notes.append(f"pid {pid} exited after {raw.duration_s:.1f} s: the report covers what was counted until then")
        notify(notes[-1])
    session.stop(raw, detach=cmd is None)
    if cmd:
        output.close()
    window.fill(raw)
    window.close()
    if window.view is None:
        notes.append("no probe file was read: requests are unknown, so nothing is given per request")
    if target_pid:
        name_threads(raw, target_pid)
    return raw, target_pid or 0


def _traced(pid: int) -> bool:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return int(line.split()[1]) != 0
    except OSError:
        return False
    return False


def _first_child(pid: int) -> int | None:
    """The command strace started, once it runs the command (strace's own forks do not count)."""
    try:
        own = Path(f"/proc/{pid}/cmdline").read_bytes()
        for tid in os.listdir(f"/proc/{pid}/task"):
            for kid in Path(f"/proc/{pid}/task/{tid}/children").read_text().split():
                line = Path(f"/proc/{kid}/cmdline").read_bytes()
                if line and line != own:      # empty: between fork and exec, not the command yet
                    return int(kid)
    except OSError:
        return None
    return None


def collect(*, pid: int | None = None, cmd: list[str] | None = None, duration: float | None = None,
            by: str = REQUEST, backend: str = "auto", loop: str | None = None,
            notify: Callable[[str], None] = _stderr) -> SyscallReport:
    """Measure ``pid`` (for ``duration`` seconds, or until it exits) or run ``cmd`` and measure it."""
    if (pid is None) == (not cmd):
        raise CoroscopeError("give either --pid PID or -- CMD ...")
    if by not in (REQUEST, TASK, THREAD):
        raise CoroscopeError(f"--by must be request, task or thread, not {by!r}")
    if duration is not None and duration <= 0:
        raise CoroscopeError("--duration must be positive")
    if pid is not None:
        check_pid(pid)
        if duration is None:
            duration = 10.0
    else:
        check_command(cmd)
    name, notes = choose_backend(backend, notify)
    measure = measure_bpf if name == "bpf" else measure_ptrace
    raw, target_pid = measure(pid=pid, cmd=cmd, duration=duration, by=by, loop=loop, notify=notify, notes=notes)
    raw.notes[:0] = notes
    target = f"pid {pid}" if cmd is None else " ".join(cmd)
    loop_kind = raw.loop or loop
    return build_report(raw, target=target, pid=target_pid, loop=loop_kind)
