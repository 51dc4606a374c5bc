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
    bucket_names: dict[Bucket, str] = field(default_factory=dict)  # thread / task names when known
    has_timing: bool = True
    loop: str | None = None                   # the target's loop kind, from its probe file
    python: tuple[int, int] | None = None     # the target's CPython version, from its Py_Version
    duration_s: float = 0.0
    cannot_attribute: str | None = None
    notes: list[str] = field(default_factory=list)
    complete: bool = True
    # Request buckets, kept compact (a window at 15,000 requests/s holds 150,000 of them): the
    # calls of each request by name, its time, and one cell per name over all requests.
    request_calls: dict[int, dict[str, int]] = field(default_factory=dict)
    request_time: dict[int, int] = field(default_factory=dict)
    request_cells: dict[str, Cell] = field(default_factory=dict)
    overflowed: int = 0                       # calls counted by syscall alone (maps full)
    window: "RequestWindow | None" = None     # which requests the window holds (probe file)

    def cell(self, bucket: Bucket, name: str) -> Cell:
        names = self.cells.setdefault(bucket, {})
        c = names.get(name)
        if c is None:
            c = names[name] = Cell()
        return c

    def add_cell(self, kind: str, ident: int, name: str, count: int, time_ns: int = 0,
                 timed: int = 0, returned: int = 0, max_request_size: int = 0) -> None:
        """Add one drained (bucket, syscall) cell."""
        if kind == REQUEST:
            calls = self.request_calls.get(ident)
            if calls is None:
                calls = self.request_calls[ident] = {}
            calls[name] = calls.get(name, 0) + count
            self.request_time[ident] = self.request_time.get(ident, 0) + time_ns
            c = self.request_cells.get(name)
            if c is None:
                c = self.request_cells[name] = Cell()
        else:
            c = self.cell((kind, ident), name)
        c.count += count
        c.time_ns += time_ns
        c.timed += timed
        c.returned += returned
        if max_request_size > c.max_request_size:
            c.max_request_size = max_request_size

    def add_errors(self, kind: str, ident: int, name: str, err: int, n: int) -> None:
        if kind == REQUEST:
            c = self.request_cells.setdefault(name, Cell())
        else:
            c = self.cell((kind, ident), name)
        c.errors[err] = c.errors.get(err, 0) + n

    def add_overflow(self, name: str, n: int) -> None:
        """Calls whose (bucket, syscall) cell found the map full: counted, not attributed."""
        self.cell((UNATTRIBUTED, 0), name).count += n
        self.overflowed += n

    def add_sequence(self, rid: int, names: tuple, limit: int) -> None:
        """A request's calls in order, continued from an earlier drain's (a request that spans
        an epoch switch has its first calls in one map set and the next ones in the other)."""
        before = self.sequences.get(rid)
        seq = names if before is None else (tuple(before) + names)[:limit]
        self.sequences[rid] = self._interned.setdefault(seq, seq)

    @property
    def _interned(self) -> dict:
        d = self.__dict__.get("_seq_interned")
        if d is None:
            d = self.__dict__["_seq_interned"] = {}
        return d

    def request_buckets(self):
        """Every request bucket as (id, {name: calls}), as the aggregator reads them."""
        return self.request_calls.items()


@dataclass
class RequestWindow:
    """Which requests a window holds, from the probe file's edges (``runtime.probefile``,
    "Requests a window counts"): those with an id above ``first_after`` ... up to ``last_id``
    that were not running at its end. ``count`` is how many (requests that made no syscall
    included); ``unlisted`` requests the target could not list, by which ``count`` may be off."""

    first_after: int
    last_id: int
    running_at_end: set[int]
    count: int
    unlisted: int = 0
    start_ns: int = 0
    end_ns: int = 0

    def holds(self, rid: int) -> bool:
        return self.first_after < rid <= self.last_id and rid not in self.running_at_end


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
