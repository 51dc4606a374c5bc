"""The syscalls report: syscalls per request (or task, or thread), per syscall name, with hints.

Filled by ``diag.syscalls.aggregate`` from the raw counts a backend gathered; rendered by
``diag.syscalls.render`` (terminal) and by anyone who reads the JSON. No view computes numbers.

JSON keys the issue promises (and tests check): ``backend``, ``requests``,
``per_request.by_name.<syscall>.mean``, ``per_request.total.{mean,p50,p99,max}``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Distribution:
    """Calls per request of one syscall (or of all), over ``requests`` requests.

    Requests that made none of these calls count as 0, so ``mean`` is over every request.
    """

    mean: float
    p50: float
    p99: float
    max: int
    total: int  # calls summed over all requests (not the loop bucket)


@dataclass
class NameRow:
    """One syscall name, over the whole run (every bucket, the loop one included)."""

    name: str
    calls: int
    per_request: float | None   # direct: calls made inside requests / requests (None: not attributed)
    amortized: float | None     # every call of this name / requests (None: no requests seen)
    loop_calls: int             # calls made outside any request (poll, timers, accept)
    steady_calls: int           # calls in requests or the loop: excludes "unattributed" threads (a
                                # thread before its slot was known, e.g. interpreter start-up);
                                # equals calls by thread (bpf or ptrace: no thread is unattributed)
    failures: dict[str, int]    # errno name -> count ("EAGAIN": 12), over every call
    mean_time_us: float | None  # mean time inside the syscall; None when the backend has no timing
    # The next three are over the steady calls only, so start-up reads do not hide the service's.
    mean_bytes: float | None    # read-like calls: mean bytes returned; None otherwise
    max_request_size: int | None  # read-like calls: the largest size asked for (recv(262144))
    mean_events: float | None   # poll-like calls (epoll_wait...): mean events returned per poll


@dataclass
class RequestCost:
    """One request, for the "most expensive" list: its id, name and the syscalls it made in order."""

    id: int
    name: str
    calls: int
    time_us: float | None
    sequence: list[str]     # syscall names in order, the first ``len(sequence)`` of ``calls``
    sequence_truncated: bool


@dataclass
class BucketRow:
    """A task, a thread, or the loop bucket, when the report is by task or by thread."""

    kind: str        # "task", "thread", "loop" (no task/request running), "unattributed"
    id: int          # task id, thread id, 0 for loop
    name: str
    calls: int
    by_name: dict[str, int]


@dataclass
class Hint:
    pattern: str     # "allocation-churn", "re-registration", "small-reads", "eagain-storm",
                     # "small-poll-batches", "getpid-per-get-running-loop" (diag.syscalls.hints)
    message: str     # one sentence: the numbers, then the cause, then what to do


@dataclass
class RouteCost:
    """Direct counts of the requests of one name ("GET /items/{n}"), over those of its requests
    that made a syscall in the window (a request that made none is not seen by the counter) and
    began inside it (one that began before had calls the counter did not see)."""

    name: str
    requests: int
    per_request: float                 # all syscalls / requests
    by_name: dict[str, float]          # syscall -> calls / requests, most first


@dataclass
class PerRequest:
    """Direct counts: syscalls made while a request was current on the calling thread."""

    by_name: dict[str, Distribution]
    total: Distribution


@dataclass
class SyscallReport:
    backend: str                 # "bpf" or "ptrace"
    by: str                      # "request", "task" or "thread": how calls were attributed
    target: str                  # "pid 1234" or the command line
    pid: int | None
    loop: str | None             # "runtime", "asyncio", "uvloop" when known
    duration_s: float
    requests: int                # requests done in the window (probe file), or seen in the counts
    total_calls: int             # every syscall of the target in the window
    loop_calls: int              # made outside any request (the loop bucket)
    unattributed_calls: int      # made on threads whose slot we could not read
    per_request: PerRequest | None   # None when the backend cannot attribute calls to requests
    amortized_per_request: float | None  # total_calls / requests
    steady_per_request: float | None     # (total_calls - unattributed_calls) / requests: the same
                                         # without start-up (threads before their slot was known)
    names: list[NameRow]
    top_requests: list[RequestCost]
    buckets: list[BucketRow]
    hints: list[Hint]
    cannot_attribute: str | None # what this backend does not attribute, in one sentence
    notes: list[str] = field(default_factory=list)  # fallbacks taken, target exited early, ...
    by_route: list[RouteCost] = field(default_factory=list)  # per request name, most requests first
    complete: bool = True        # False when the target exited before the window ended
    python: str | None = None    # the target's CPython version ("3.11") when it could be read
    # The window, when the target's probe file gave its edges: monotonic ns (CLOCK_MONOTONIC,
    # the clock of every process on the host) of its start and end. ``requests`` are those
    # that began after the start and ended before the end; ``requests_across_edges`` made
    # syscalls in the window but ran across one of its edges.
    window_start_ns: int | None = None
    window_end_ns: int | None = None
    requests_across_edges: int = 0
