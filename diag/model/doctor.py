"""The doctor report: one run of a service per loop, what was measured, and ranked findings.

Filled by ``diag.doctor.command`` (measurements) and ``diag.doctor.findings`` (findings); the
terminal summary and the HTML report (``diag.doctor.report_html``) render it and compute
nothing of their own.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .flame import AwaitSite


@dataclass
class Finding:
    title: str            # one line: what is wrong, with its number
    severity: str         # "error", "warning" or "info"
    impact: float         # ranking key, larger first; a percentage of something the user pays
                          # (loop time blocked, syscalls per request, fds per cycle scaled to
                          # matter): comparable within a severity, not across reports
    run: str              # the run it was found in ("runtime", "asyncio"), or "all"
    evidence: list[str]   # the numbers and stacks that show it, one line each
    advice: str = ""      # what to do, one sentence
    kind: str = ""        # the problem's name ("blocked-loop", "fd-leak", "n+1-awaits", ...),
                          # so runs can be compared: the same kind in two runs is one problem


@dataclass
class LatencyStats:
    source: str           # "wrk" or "built-in client"
    connections: int
    duration_s: float
    requests: int
    requests_per_s: float
    errors: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass
class TimePoint:
    t: float              # seconds since the run started
    value: float


@dataclass
class FlameGraph:
    mode: str             # "cpu" or "await"
    backend: str          # "py-spy", "sampler"
    svg: str | None       # the standalone SVG document (diag.flame.formats.render_svg); None: not available
    samples: float        # total weight
    top: list[tuple[str, float]]  # frames with the most self weight: (frame, share 0..1)
    note: str = ""        # why it is missing or partial
    # await mode: where tasks wait in the user's code, most first, and the share of waiting
    # with no user frame (connections idling in the server's own code)
    await_sites: list[AwaitSite] = field(default_factory=list)
    idle_share: float = 0.0


@dataclass
class Run:
    label: str                              # "runtime", "asyncio", or the service's name
    command: list[str]
    loop: str | None
    pid: int
    # latency: the timed phase (wrk if installed, else the built-in client), and over time
    latency: LatencyStats | None
    latency_p50_ms: list[TimePoint]         # built-in client, 100 ms buckets
    latency_p99_ms: list[TimePoint]
    fds: list[TimePoint]                    # /proc/PID/fd count, sampled every 100 ms, whole run
    threads: list[TimePoint]
    # syscalls: exact requests on a warm connection (see diag.check.runner)
    syscalls_backend: str | None
    syscalls_per_request: dict[str, float] | None
    # leaks: fds after each connect/request/close cycle, once settled
    fds_after_cycle: list[int]
    leaked_fds_per_cycle: float | None
    # the loop's own view (probe file) and the client's
    warnings: list[tuple[str, str, str]]    # (kind, message, source)
    slow_steps: int                         # slow steps the probe recorded (0 when not traced)
    scheduling_lag_ms: dict[str, float] | None  # p50/p99/max timer lateness, runtime only
    flames: list[FlameGraph]
    notes: list[str] = field(default_factory=list)   # "not available: why", target output, ...
    complete: bool = True
    # live asyncio tasks after each of the same cycles, from the probe file (diag.doctor.measure
    # .TaskCounter); empty and leaked None when not countable (then a note says why)
    tasks_after_cycle: list[int] = field(default_factory=list)
    leaked_tasks_per_cycle: float | None = None
    leaked_task_survivors: list[str] = field(default_factory=list)  # "N x coro (created at f:l)"
    # fds opened during the leak cycles and still open after them: (kind, where opened, count),
    # where known (fd tracking in the target)
    leaked_fd_origins: list[tuple[str, str, int]] = field(default_factory=list)
    # where the loop's thread ran the user's code, from the await life's wall samples:
    # (innermost user frame, the call it was in, share of the loop thread's samples)
    loop_thread_sites: list[tuple[str, str, float]] = field(default_factory=list)


@dataclass
class DoctorReport:
    created: str                # UTC time, ISO 8601
    target: str                 # the command, as typed
    load: str                   # "http", "echo", a URL, or the load command
    duration_s: float
    runs: list[Run]
    findings: list[Finding]     # ranked: severity, then impact
    html_path: str | None = None
