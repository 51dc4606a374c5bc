"""Report model for file descriptors and leaks: the live inventory, leak-cycle reports, trends.

Plain dataclasses; ``diag.model.base.to_jsonable`` gives their JSON form. Collectors in
``diag/fds`` fill them, ``diag/fds/render.py`` and the dashboard draw them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Kinds of fd, as classified from the /proc/PID/fd link target and fdinfo. Stable strings:
# they are JSON keys (per_cycle.<kind>) and what ignore filters match.
FD_KINDS = (
    "tcp", "tcp6", "udp", "udp6", "unix", "socket",        # sockets (socket: other families)
    "eventfd", "epoll", "timerfd", "signalfd", "inotify",  # anon inodes with fdinfo detail
    "pipe", "memfd", "file", "dir", "char", "block", "anon", "other",
)
# Non-fd resources the leak checker also counts.
RESOURCE_KINDS = ("thread", "process", "task")


@dataclass
class Frame:
    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"


@dataclass
class Origin:
    """Who opened an fd (or started a thread / process, or created a task)."""
    stack: list[Frame]                 # innermost first; may be empty when only the site is known
    site: Frame | None = None          # the frame reports name: innermost frame outside stdlib and coroscope
    task: str | None = None            # asyncio task name or runtime task id at open time
    request: str | None = None         # runtime request id at open time, when tracing knew one
    source: str = "fdtrack"            # "fdtrack" (in-process hooks), "probe" (probe file), "path" (audit open, matched by path)


@dataclass
class FdRow:
    fd: int
    kind: str                          # one of FD_KINDS
    target: str                        # the /proc/PID/fd/N link text, e.g. "anon_inode:[eventfd]"
    detail: str = ""                   # one-line human description: addresses and state, counter, path...
    info: dict[str, Any] = field(default_factory=dict)   # parsed fields (local, remote, state, count, watches, flags, pos...)
    origin: Origin | None = None


@dataclass
class Inventory:
    pid: int
    rows: list[FdRow]
    complete: bool = True              # False when the scan stopped early (process gone, no permission)
    notices: list[str] = field(default_factory=list)     # one line each: what was skipped and why
    closed_while_reading: int = 0      # fds listed but gone before their link could be read
    stacks: str = "none"               # where opening stacks came from: "fdtrack", "probe", "none"
    elapsed_s: float = 0.0

    def counts_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.kind] = counts.get(row.kind, 0) + 1
        return dict(sorted(counts.items()))


@dataclass
class LeakSite:
    """One place that opened leaked resources of one kind."""
    file: str
    line: int
    function: str
    count: int                         # leaked resources of this kind opened here, over all measured cycles
    stack: list[Frame] = field(default_factory=list)     # one example stack, innermost first


@dataclass
class Leak:
    kind: str                          # FD_KINDS or RESOURCE_KINDS
    per_cycle: float                   # growth per measured cycle (total / cycles)
    total: int                         # growth from the baseline to the end
    opened_at: list[LeakSite]          # sorted by count, largest first; empty when no stack was known
    message: str                       # "12 eventfd per cycle, opened at mylib/executor.py:88 in _make_notifier"
    examples: list[str] = field(default_factory=list)    # a few leaked items (fd rows, thread names, tasks)


@dataclass
class LeakReport:
    target: str                        # what ran: "examples/leaks/eventfd_loop.py:cycle" or the command line
    mode: str                          # "cycle" (in-process cycle function) or "command" (whole command per cycle)
    cycles: int
    warmup: int
    baseline: dict[str, int]           # counts by kind after warm-up
    samples: list[dict[str, int]]      # counts by kind after each measured cycle
    per_cycle: dict[str, float]        # every kind seen: (final - baseline) / cycles
    leaks: list[Leak]
    notices: list[str] = field(default_factory=list)
    retries: int = 0                   # how many times the final sample was retaken (goleak-style backoff)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.leaks


@dataclass
class TrendWarning:
    kind: str
    grew_by: int                       # last - first over the window
    window: int                        # samples in the window
    message: str


@dataclass
class FdTrendPoint:
    t: float                           # seconds (monotonic clock of the sampler)
    counts: dict[str, int]             # fds by kind


def _frame(d: dict) -> Frame:
    return Frame(file=d["file"], line=int(d["line"]), function=d["function"])


def leak_report_from_dict(d: dict) -> LeakReport:
    """The inverse of ``to_jsonable`` for a LeakReport (the leaks child writes JSON, the CLI reads it)."""
    leaks = [Leak(kind=l["kind"], per_cycle=float(l["per_cycle"]), total=int(l["total"]),
                  opened_at=[LeakSite(file=s["file"], line=int(s["line"]), function=s["function"],
                                      count=int(s["count"]), stack=[_frame(f) for f in s.get("stack", [])])
                             for s in l.get("opened_at", [])],
                  message=l["message"], examples=list(l.get("examples", [])))
             for l in d.get("leaks", [])]
    return LeakReport(target=d["target"], mode=d["mode"], cycles=int(d["cycles"]), warmup=int(d["warmup"]),
                      baseline=dict(d["baseline"]), samples=[dict(s) for s in d["samples"]],
                      per_cycle={k: float(v) for k, v in d["per_cycle"].items()}, leaks=leaks,
                      notices=list(d.get("notices", [])), retries=int(d.get("retries", 0)),
                      elapsed_s=float(d.get("elapsed_s", 0.0)))
