"""The live view of one process at one moment: what `coroscope top` draws and records.

A ``LiveSnapshot`` is everything the dashboard shows, as plain data: the task table, the
request and loop series, fd counts with their trend, hot paths, the slow steps seen so far,
and what the source could not provide (``missing``). The dashboard renders snapshots and
nothing else; a recording is a sequence of snapshots; the warnings in ``diag.warnings`` are
pure functions of one snapshot, so `coroscope check` can run them on a recording in CI.

Times are nanoseconds on the target's monotonic clock (``taken_ns`` is "now" for every age
in the snapshot) except ``wall_time``, which is Unix seconds, for display only.
``from_jsonable`` is the inverse of ``diag.model.base.to_jsonable`` for these classes; it
tolerates unknown keys (a newer minor writer) but not a different ``SNAPSHOT_VERSION``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

# Bump when a field changes meaning or disappears; recordings carry it in their header.
SNAPSHOT_VERSION = 1

# Step-time histogram buckets: upper bounds in microseconds; the last bucket is open-ended.
STEP_BUCKETS_US: tuple[int, ...] = (10, 100, 1_000, 10_000, 100_000, 1_000_000)
STEP_BUCKET_LABELS: tuple[str, ...] = ("<10us", "<100us", "<1ms", "<10ms", "<100ms", "<1s", ">=1s")


@dataclass
class TaskRow:
    id: int
    name: str
    coro: str                    # qualname of the coroutine, "" when unknown
    location: str                # "file:line" where the task was created, "" when unknown
    parent_id: int               # 0: no parent task (created from a callback or at top level)
    state: str                   # "running" | "scheduled" | "idle" | "done" | "unknown" (records
                                 # were lost since its last step: it may have ended unseen)
    polls: int                   # steps taken so far
    busy_ns: int                 # sum of step durations (includes the running step so far)
    scheduled_ns: int            # sum of delays between being queued and being stepped
    idle_ns: int                 # time alive and neither running nor queued
    age_ns: int                  # now - creation (or done - creation once done)
    last_step_end_ns: int        # 0 before the first step ended
    running_for_ns: int          # > 0 only while state == "running": the current step so far
    self_wakes: int              # steps after which the task queued itself (bare yield)
    wakes: int                   # steps after which the task was suspended and later resumed
    awaiting: str                # what the task waits on after its last step, "" unknown
    outcome: str                 # "" while alive; "result" | "exception" | "cancelled"
    step_histogram: list[int] = field(default_factory=lambda: [0] * len(STEP_BUCKET_LABELS))
    await_chain: list[str] = field(default_factory=list)   # outermost first, when known
    # when awaiting and await_chain were read from the target's memory (monotonic ns, as
    # taken_ns); 0: not read there (no read yet, or the task was not in the last one)
    awaiting_read_ns: int = 0


@dataclass
class SlowStep:
    task_id: int
    task_name: str
    duration_ns: int
    at_ns: int                   # when the step ended
    stack: list[str]             # "file:line in function", outermost first
    coro: str = ""               # the task's coroutine qualname, "" unknown


@dataclass
class NeverAwaited:
    coro: str
    location: str
    at_ns: int


@dataclass
class Series:
    """One value per second, oldest first; ``start_s`` is the second of values[0]."""
    start_s: int = 0
    values: list[float] = field(default_factory=list)


@dataclass
class RouteRow:
    """Requests of one name ("GET /items/{n}"): a web framework's route, or a runtime.request."""
    name: str
    ended: int = 0               # since the source was attached
    in_flight: int = 0
    p50_ms: float = 0.0          # over its last ROUTE_LATENCIES requests (diag.live.state)
    p99_ms: float = 0.0
    max_ms: float = 0.0


@dataclass
class RequestStats:
    total: int = 0               # requests ended since the source was attached
    in_flight: int = 0
    rate: Series = field(default_factory=Series)        # requests ended per second
    p50_ms: Series = field(default_factory=Series)
    p99_ms: Series = field(default_factory=Series)
    max_ms: Series = field(default_factory=Series)
    window_p50_ms: float = 0.0   # over the last window (see diag.live.state.WINDOW_S)
    window_p99_ms: float = 0.0
    window_max_ms: float = 0.0
    syscalls_per_request: dict[str, float] = field(default_factory=dict)   # name -> mean count
    syscalls_note: str = ""      # why syscalls_per_request is empty, when it is
    by_name: list[RouteRow] = field(default_factory=list)   # most ended first


@dataclass
class LoopStats:
    iterations_per_s: Series = field(default_factory=Series)
    poll_blocked_ms_per_s: Series = field(default_factory=Series)   # ms per second in poll
    ready_mean: Series = field(default_factory=Series)             # callbacks per iteration
    sched_lag_p99_ms: Series = field(default_factory=Series)
    iterations: int = 0


@dataclass
class FdRow:
    fd: int
    kind: str
    task_id: int                 # 0: unknown or not opened by a task
    opened_at_ns: int            # 0: unknown (it was open before we attached)
    stack: list[str]             # opening stack, outermost first; [] when unknown
    detail: str = ""             # e.g. a socket's addresses, a file's path


@dataclass
class FdStats:
    by_kind: dict[str, int] = field(default_factory=dict)
    # per kind, one count per sample (one sample per refresh), oldest first
    trend: dict[str, list[int]] = field(default_factory=dict)
    open: list[FdRow] = field(default_factory=list)
    source: str = ""             # "/proc/PID/fd" or "probe records" or ""
    note: str = ""               # why something is missing


@dataclass
class HotPath:
    function: str                # "function (file:line)"
    self_samples: int
    total_samples: int


@dataclass
class HotPaths:
    top: list[HotPath] = field(default_factory=list)
    # folded stacks "a;b;c" -> samples, for the terminal flame view
    folded: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    source: str = ""
    note: str = ""


@dataclass
class TargetInfo:
    pid: int = 0
    command: str = ""
    loop: str = "unknown"        # "runtime" | "asyncio" | "uvloop" | "unknown"
    alive: bool = True
    note: str = ""               # e.g. "target exited at 14:02:03; showing what was gathered"


@dataclass
class LiveSnapshot:
    version: int = SNAPSHOT_VERSION
    taken_ns: int = 0
    wall_time: float = 0.0
    source: str = ""
    target: TargetInfo = field(default_factory=TargetInfo)
    tasks: list[TaskRow] = field(default_factory=list)
    requests: RequestStats = field(default_factory=RequestStats)
    loop: LoopStats = field(default_factory=LoopStats)
    fds: FdStats = field(default_factory=FdStats)
    hot: HotPaths = field(default_factory=HotPaths)
    slow_steps: list[SlowStep] = field(default_factory=list)
    never_awaited: list[NeverAwaited] = field(default_factory=list)
    records: int = 0             # records consumed since attaching
    lost_records: int = 0        # records the writer overwrote before we read them
    # records passed unread to bound the dashboard's CPU (scanned for the kinds that carry
    # warnings, which are applied; rates then come from the probe's counters)
    skipped_records: int = 0
    missing: list[str] = field(default_factory=list)   # "what: why", shown as a panel
    awaits_note: str = ""        # the last read of await chains from memory: what it found


@dataclass
class Finding:
    """One warning raised by a lint in ``diag.warnings`` against a snapshot."""
    lint: str                    # the lint's name, e.g. "blocked-loop"
    severity: str                # "warning" | "error"
    subject: str                 # what it is about: "task 12 (worker)", "fd kind socket"
    message: str                 # one line
    evidence: list[str] = field(default_factory=list)   # e.g. the stack of a slow step


def from_jsonable(cls: type, data: Any) -> Any:
    """Rebuild a dataclass of this module (nested) from its JSON form."""
    if not isinstance(data, dict):
        raise ValueError(f"expected an object for {cls.__name__}, got {type(data).__name__}")
    hints = get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**kwargs)


def _convert(tp: Any, value: Any) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_jsonable(tp, value)
    if origin is list:
        (item,) = get_args(tp)
        return [_convert(item, v) for v in value]
    if origin is dict:
        _k, item = get_args(tp)
        return {str(k): _convert(item, v) for k, v in value.items()}
    return value
