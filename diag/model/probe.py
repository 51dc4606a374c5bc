"""What the probe reader reports: decoded tracepoint records, counters, thread slots, fd origins.

Filled by ``diag.probe`` from a process's probe file (``runtime.probefile``); rendered by
``diag.probe_command`` (text, or JSON through ``diag.model.base.to_jsonable``).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ProbeRecord:
    """One tracepoint record, fields named after ``runtime.probefile.RECORD_FIELDS``."""

    seq: int                 # 1-based, consecutive in the writer: a gap the reader saw is "lost"
    kind: str                # "task_create", "step_begin", ... (``Rec`` names, lower case)
    ns: int                  # CLOCK_MONOTONIC nanoseconds in the writer
    thread: int | None       # thread slot index of the emitter; None when not looked up
    task: int                # task id (0: none)
    request: int             # request id (0: none)
    fields: dict[str, int | str] = field(default_factory=dict)   # string ids already resolved


@dataclass
class ThreadSlot:
    index: int
    tid: int                 # kernel thread id
    task: int                # task running now (0: none)
    request: int             # request running now (0: none)
    step_running_ns: int     # how long the current step has run when read (0: idle)


@dataclass
class FdOrigin:
    fd: int
    kind: str
    generation: int          # how many times this fd number was opened by the traced code
    task: int
    request: int
    stack: str               # short creation stack, innermost frame first


@dataclass
class ProbeSnapshot:
    pid: int
    path: str
    version: int
    loop_kind: str
    live: bool               # False: the writer closed the file (its process is exiting)
    counters: dict[str, int]
    threads: list[ThreadSlot]
    open_fds: list[FdOrigin]
    records: list[ProbeRecord]
    records_lost: int        # records the writer overwrote before this reader got them
