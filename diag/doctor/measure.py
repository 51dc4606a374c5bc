"""What doctor and check measure on a running target, each with the backend that measured it.

Every measurement here reads the target from outside: the kernel (eBPF syscall counts),
/proc (fd and thread counts). None makes the target run code or do syscalls, so the numbers
are those of the service alone.

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

_BPF_TEXT = r"""
#include <uapi/linux/ptrace.h>
BPF_HASH(counts, u32, u64, 1024);
TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if ((pid_tgid >> 32) != TARGET_TGID)
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
        import bcc  # noqa: F401
    except Exception as exc:  # ImportError or a missing libbcc
        return f"bcc is not importable ({exc.__class__.__name__})"
    if not os.path.exists("/sys/kernel/tracing/events/raw_syscalls") and not os.path.exists(
            "/sys/kernel/debug/tracing/events/raw_syscalls"):
        return "the raw_syscalls tracepoint is not available (tracefs not mounted)"
    return None


class SyscallCounter:
    """Counts every syscall the target process makes, by name, between ``reset`` and ``read``."""

    backend = "bpf (process-wide)"

    def __init__(self, pid: int):
        from bcc import BPF
        self.pid = pid
        self.bpf = BPF(text=_BPF_TEXT.replace("TARGET_TGID", str(int(pid))))
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


def syscall_name(nr: int) -> str:
    """x86_64 syscall number -> name, from bcc's table."""
    from bcc.syscall import syscall_name as _name
    name = _name(nr)
    name = name.decode() if isinstance(name, bytes) else name
    return f"syscall_{nr}" if name.startswith("[unknown") else name


def count_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def count_threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


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

    def __init__(self, pid: int, interval: float = 0.1):
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
