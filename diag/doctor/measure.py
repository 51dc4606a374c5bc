"""What doctor and check measure on a running target, each with the backend that measured it.

Every measurement here reads the target from outside: the kernel (eBPF syscall counts),
/proc (fd and thread counts), the target's probe file (live tasks: a load from our own mapping
of its shared memory). None makes the target run code or do syscalls, so the numbers are those
of the service alone.

Syscalls are counted process-wide over a window the caller opens and closes around an exact
number of requests sent by the built-in load client on warm connections. With one connection
and one request in flight, every request costs the same syscalls (the poll that wakes the loop,
the read, the write, whatever the handler does), so the count divided by the number of requests
is exact. Using more connections would let one poll return several events and turn the
per-request count into a fraction that depends on timing, which a CI budget must not.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from diag.syscalls.counts import syscall_name

_BPF_TEXT = r"""
#include <uapi/linux/ptrace.h>
BPF_HASH(counts, u32, u64, 1024);
TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!(TARGET_TGIDS))
        return 0;
    u32 nr = args->id;
    counts.increment(nr);
    return 0;
}
"""


def syscall_counting_unavailable() -> str | None:
    """None when process-wide eBPF syscall counting can run here, else why not."""
    if os.geteuid() != 0:
        return "eBPF syscall counting needs root"
    try:
        from diag.syscalls.bcc_module import import_bcc
        import_bcc()
    except Exception as exc:  # ImportError or a missing libbcc
        return f"bcc is not importable ({exc.__class__.__name__})"
    if not os.path.exists("/sys/kernel/tracing/events/raw_syscalls") and not os.path.exists(
            "/sys/kernel/debug/tracing/events/raw_syscalls"):
        return "the raw_syscalls tracepoint is not available (tracefs not mounted)"
    return None


class SyscallCounter:
    """Counts every syscall the target makes, by name, between ``reset`` and ``read``. The
    target is one process, or a pre-fork service's workers (each request is served by one of
    them; counting all of them is counting the service)."""

    backend = "bpf (process-wide)"

    def __init__(self, pids: int | list[int]):
        from diag.syscalls.bcc_module import import_bcc
        BPF = import_bcc().BPF
        self.pids = [int(pids)] if isinstance(pids, int) else [int(p) for p in pids]
        self.pid = self.pids[0]
        condition = " || ".join(f"tgid == {p}" for p in self.pids)
        self.bpf = BPF(text=_BPF_TEXT.replace("TARGET_TGIDS", condition))
        self.counts = self.bpf["counts"]

    def total(self) -> int:
        return sum(v.value for v in self.counts.values())

    def wait_quiet(self, quiet_s: float = 0.03, timeout: float = 2.0) -> bool:
        """Wait until the target makes no syscall for ``quiet_s``: it is parked in its poll.

        Opening or closing the window while the target is still finishing the previous request
        (the poll it re-enters after a write, the buffer it frees) would move one call across
        the boundary and make the per-request count a fraction.
        """
        deadline = time.monotonic() + timeout
        last = self.total()
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(quiet_s / 3)
            now = self.total()
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return True
        return False

    def reset(self) -> None:
        """Open the window: once the target is quiet, forget everything counted so far."""
        self.wait_quiet()
        self.counts.clear()

    def read(self) -> dict[str, int]:
        """Close the window: once the target is quiet again, the counts since ``reset``."""
        self.wait_quiet()
        return {syscall_name(k.value): v.value for k, v in self.counts.items()}

    def close(self) -> None:
        self.bpf.cleanup()




def count_fds(pid: int | list[int]) -> int:
    """Open fds of a process, or summed over a pre-fork service's workers."""
    pids = [pid] if isinstance(pid, int) else pid
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in pids)


def count_threads(pid: int | list[int]) -> int:
    pids = [pid] if isinstance(pid, int) else pid
    return sum(len(os.listdir(f"/proc/{p}/task")) for p in pids)


def settled_count(read, timeout: float = 2.0, interval: float = 0.02, stable_reads: int = 4) -> int:
    """A count that has stopped moving: the same value ``stable_reads`` times in a row.

    After the client closes its connections the server needs a moment to see EOF and close its
    side; reading at once would count sockets on their way out as leaks.
    """
    deadline = time.monotonic() + timeout
    last, same = read(), 1
    while same < stable_reads and time.monotonic() < deadline:
        time.sleep(interval)
        value = read()
        same = same + 1 if value == last else 1
        last = value
    return last


@dataclass
class Sample:
    t: float        # seconds since the sampler started
    fds: int
    threads: int


class ProcSampler:
    """Samples the target's fd and thread counts from /proc on a thread of our own."""

    def __init__(self, pid: int | list[int], interval: float = 0.1):
        self.pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coroscope-proc-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(Sample(round(time.monotonic() - self.t0, 3),
                                           count_fds(self.pid), count_threads(self.pid)))
            except (FileNotFoundError, ProcessLookupError):
                return  # the target exited: keep what was gathered
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _relative(location: str) -> str:
    """The first line of a creation stack, its path made relative when under the cwd."""
    first = location.strip().splitlines()[0]
    cwd = os.getcwd() + os.sep
    return first[len(cwd):] if first.startswith(cwd) else first


class TaskCounter:
    """Live asyncio tasks of a traced target, from its probe file, and the ones that stay.

    The count is the probe's ``tasks_alive`` counter (task create adds one, task done takes one
    away), read through ``diag.probe``'s public API, never at raw offsets. The evidence comes
    from the ring: each task created after ``mark()`` is remembered with its coroutine and the
    line that created it until its done record comes; those still there at the end are named by
    ``survivors()``. ``poll()`` must run often enough that the ring does not wrap in between
    (once per leak cycle is plenty: a cycle writes hundreds of records, the ring holds 16,384);
    records lost anyway are counted and said.

    Where it cannot count, ``why_not`` says why in one line and every count is None: no probe
    file (the target was not started with COROSCOPE_TRACE=1, or tracing failed in it), or a
    probe that has seen no task created at all (a service that runs no asyncio loop, or one on
    a loop ``diag.instrument`` does not hook: neither asyncio's selector loop nor uvloop).
    """

    def __init__(self, pid: int, wait: float = 5.0):
        self.pid = pid
        self.reader = None
        self.why_not: str | None = None
        self._since_mark: dict[int, tuple[str, str]] = {}   # task id -> (coroutine, created at)
        self._marked = False
        from diag.errors import CoroscopeError
        try:
            from diag import probe
        except Exception as exc:  # noqa: BLE001 - a broken reader must not stop the other budgets
            self.why_not = f"the probe reader is not importable ({exc.__class__.__name__}: {exc})"
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                self.reader = probe.attach(pid, from_start=False)
                return
            except CoroscopeError as exc:  # not there yet (start-up), or not published at all
                if time.monotonic() > deadline or not os.path.exists(f"/proc/{pid}"):
                    self.why_not = f"no probe file: {exc}"
                    return
                time.sleep(0.05)

    def alive(self) -> int | None:
        """Tasks created and not yet done, now; None (and ``why_not`` set) when not countable."""
        if self.reader is None:
            return None
        counters = self.reader.counters()
        if "tasks_alive" not in counters:
            self.why_not = "the probe file has no tasks_alive counter (a layout this reader does not know)"
            return None
        if counters.get("tasks_created", 1) == 0:
            self.why_not = ("the probe saw no task created: the service runs none, or its loop "
                            "is neither asyncio's selector loop nor uvloop, which "
                            "diag.instrument hooks")
            return None
        return counters["tasks_alive"]

    def mark(self) -> None:
        """From now on, remember the tasks created, for ``survivors``."""
        self.poll()
        self._since_mark.clear()
        self._marked = True

    def poll(self) -> None:
        if self.reader is None:
            return
        for rec in self.reader.poll():
            if rec.kind == "task_create" and self._marked:
                self._since_mark[rec.task] = (str(rec.fields.get("coro") or rec.fields.get("name") or "?"),
                                              str(rec.fields.get("created_at") or ""))
            elif rec.kind == "task_done":
                self._since_mark.pop(rec.task, None)

    @property
    def records_lost(self) -> int:
        return self.reader.lost if self.reader is not None else 0

    def survivors(self, limit: int = 5) -> list[str]:
        """Tasks created since ``mark`` and not done, grouped: ``N x coro (created at where)``."""
        self.poll()
        groups: dict[tuple[str, str], int] = {}
        for key in self._since_mark.values():
            groups[key] = groups.get(key, 0) + 1
        out = [f"{n} x {coro}" + (f" (created at {_relative(where)})" if where.strip() else "")
               for (coro, where), n in sorted(groups.items(), key=lambda kv: -kv[1])[:limit]]
        if self.records_lost:
            out.append(f"({self.records_lost} probe records were lost to a wrapped ring: "
                       f"the list may be short)")
        return out

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
