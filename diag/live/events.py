"""The events ``LiveState`` consumes: one small class per thing the runtime tells.

Why a vocabulary of our own rather than the probe reader's record objects: the dashboard must
be testable with events a test builds by hand, and it has other producers besides the probe
file (the /proc fd sampler, the hot-path sampler, a stock-asyncio instrument). The adapter in
``diag.live.source`` turns probe records into these; nothing else here knows the ring layout.

Events are not changed once made, but are not ``frozen`` dataclasses: a frozen one's
``__init__`` stores each field through ``object.__setattr__``, seven times slower to build
(1.5 us against 0.2), and the probe adapter builds one per rare record of a loaded target.

Every ``ts_ns`` is on the target's monotonic clock. Ids: task ids and request ids are the
probe file's (non-zero; 0 means "none").
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TaskCreated:
    ts_ns: int
    task_id: int
    name: str = ""
    parent_id: int = 0
    coro: str = ""
    location: str = ""


@dataclass(slots=True)
class StepBegin:
    ts_ns: int
    task_id: int
    # when the step's handle entered the ready queue (an upper bound: from the probe's
    # ready_for_ns);
    # 0 unknown. For a first step or a self-wake the state uses the exact time it knows.
    queued_ns: int = 0
    wake: int = 0                # runtime.probefile WAKE_*: 0 unknown, 1 first, 2 self, 3 woken


@dataclass(slots=True)
class StepEnd:
    ts_ns: int
    task_id: int
    # what the task waits on now: "" unknown, "<yield>" for a bare yield (it queued itself:
    # a self-wake), else a description of the awaited future
    awaiting: str = ""
    await_chain: tuple[str, ...] = ()


@dataclass(slots=True)
class TaskDone:
    ts_ns: int
    task_id: int
    outcome: str = "result"      # "result" | "exception" | "cancelled"


@dataclass(slots=True)
class SlowStepSeen:
    ts_ns: int
    task_id: int
    duration_ns: int
    stack: tuple[str, ...] = ()  # outermost first


@dataclass(slots=True)
class RequestBegin:
    ts_ns: int
    request_id: int
    name: str = ""


@dataclass(slots=True)
class RequestEnd:
    ts_ns: int
    request_id: int
    name: str = ""          # set when the request was renamed while it ran (its route template)


@dataclass(slots=True)
class LoopIteration:
    ts_ns: int
    poll_ns: int
    nevents: int
    ncallbacks: int


@dataclass(slots=True)
class TimerLate:
    """A timer fired ``late_ns`` after its due time: the loop's scheduling lag."""
    ts_ns: int
    late_ns: int


@dataclass(slots=True)
class FdOpened:
    ts_ns: int
    fd: int
    kind: str
    task_id: int = 0
    stack: tuple[str, ...] = ()


@dataclass(slots=True)
class FdClosed:
    ts_ns: int
    fd: int


@dataclass(slots=True)
class TaskRenamed:
    """A task named after it was created (``asyncio.create_task(coro, name=...)`` sets the name
    once the task exists, so its create record carries the default name)."""
    ts_ns: int
    task_id: int
    name: str


@dataclass(slots=True)
class CoroNeverAwaited:
    ts_ns: int
    coro: str
    location: str = ""


@dataclass(slots=True)
class RecordsLost:
    """The writer lapped the reader: ``count`` records were overwritten unread."""
    count: int
    ts_ns: int = 0


Event = (TaskCreated | TaskRenamed | StepBegin | StepEnd | TaskDone | SlowStepSeen | RequestBegin
         | RequestEnd | LoopIteration | TimerLate | FdOpened | FdClosed | CoroNeverAwaited | RecordsLost)


@dataclass(slots=True)
class FdSample:
    """A count of the target's open fds by kind, from /proc, taken at one refresh."""
    by_kind: dict[str, int] = field(default_factory=dict)
    # fd -> (kind, detail) for every open fd
    fds: dict[int, tuple[str, str]] = field(default_factory=dict)
