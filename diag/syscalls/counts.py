"""What a backend hands to the aggregator: raw counts per (bucket, syscall name).

A bucket is where a syscall is charged: a request, a task, a thread, the loop (no request or
task current on the thread), or "unattributed" (a thread whose slot could not be read). Both
backends fill the same structure, so the aggregator, the report and the hints never know which
backend ran.
"""
from __future__ import annotations

import errno as _errno
from dataclasses import dataclass, field

REQUEST, TASK, THREAD, LOOP, UNATTRIBUTED = "request", "task", "thread", "loop", "unattributed"
# The numeric kind used inside the eBPF program (see bpf.py), in the same order.
KIND_BY_CODE = {0: LOOP, 1: REQUEST, 2: TASK, 3: THREAD, 4: UNATTRIBUTED}

# Syscalls whose return value is a byte count read: small-read and big-buffer hints look at them.
READ_LIKE = frozenset({"read", "recvfrom", "recvmsg", "readv", "pread64"})
# Syscalls whose return value is a count of ready events: the small-poll-batch hint looks at them.
POLL_LIKE = frozenset({"epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6"})


@dataclass
class Cell:
    count: int = 0
    time_ns: int = 0          # summed over calls that returned while we watched
    timed: int = 0            # calls with a time (count minus calls still in flight or untimed)
    returned: int = 0         # read-like: bytes returned; poll-like: events returned (successful calls)
    max_request_size: int = 0  # read-like calls: largest size asked for
    errors: dict[int, int] = field(default_factory=dict)  # errno -> count

    def add(self, other: "Cell") -> None:
        self.count += other.count
        self.time_ns += other.time_ns
        self.timed += other.timed
        self.returned += other.returned
        self.max_request_size = max(self.max_request_size, other.max_request_size)
        for e, n in other.errors.items():
            self.errors[e] = self.errors.get(e, 0) + n


Bucket = tuple[str, int]  # (kind, id): ("request", 17), ("loop", 0), ("thread", 4242)


@dataclass
class RawCounts:
    backend: str
    by: str                                   # REQUEST, TASK or THREAD
    cells: dict[Bucket, dict[str, Cell]] = field(default_factory=dict)
    sequences: dict[int, list[str]] = field(default_factory=dict)  # request id -> first calls in order
    sequence_limit: int = 0                   # sequences hold at most this many calls
    requests_done: int | None = None          # from the probe file counters, over the window
    request_names: dict[int, str] = field(default_factory=dict)
    requests_begun_before: set[int] = field(default_factory=set)  # began before counting did
    bucket_names: dict[Bucket, str] = field(default_factory=dict)  # thread / task names when known
    has_timing: bool = True
    loop: str | None = None                   # the target's loop kind, from its probe file
    python: tuple[int, int] | None = None     # the target's CPython version, from its Py_Version
    duration_s: float = 0.0
    cannot_attribute: str | None = None
    notes: list[str] = field(default_factory=list)
    complete: bool = True

    def cell(self, bucket: Bucket, name: str) -> Cell:
        names = self.cells.setdefault(bucket, {})
        c = names.get(name)
        if c is None:
            c = names[name] = Cell()
        return c


def errno_name(code: int) -> str:
    return _errno.errorcode.get(code, f"E{code}")


def syscall_name(nr: int) -> str:
    """x86_64 syscall number -> name (bcc's table, with a plain fallback)."""
    try:
        from diag.syscalls.bcc_module import import_bcc
        _name = import_bcc().syscall.syscall_name
    except Exception:  # bcc absent: the ptrace backend gets names from strace anyway
        return f"syscall_{nr}"
    name = _name(nr)
    if isinstance(name, bytes):
        name = name.decode()
    if name.startswith("[unknown"):
        return f"syscall_{nr}"
    return name
