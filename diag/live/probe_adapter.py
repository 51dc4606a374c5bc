"""Probe-file records (``diag.probe``) -> dashboard events (``diag.live.events``).

The one module of the dashboard that knows the probe reader. It attaches read-only (the
reader only loads from its own mapping of the target's shared memory) and converts each
decoded record; timer add/fire pairs become scheduling-lag samples, and so does each step's
time in the ready queue (from the step begin's wake kind and ready time); the reader's exact count
of records lost to a lapping writer becomes a ``RecordsLost`` event. What the probe records
do not carry is listed in ``missing`` so the dashboard can say so instead of showing zeros.
"""
from __future__ import annotations

from collections import OrderedDict

from diag.errors import CoroscopeError

from runtime import probefile as pf

from . import events as ev

# positions of a..f in a raw record tuple, and the kinds this adapter turns into events
_A, _B, _C, _D, _E, _F = 7, 8, 9, 10, 11, 12
_R = {k.name: int(k) for k in pf.Rec}    # plain ints: IntEnum compares are slower
_TASK_CREATE, _STEP_BEGIN, _STEP_END, _TASK_DONE = (_R["TASK_CREATE"], _R["STEP_BEGIN"],
                                                   _R["STEP_END"], _R["TASK_DONE"])
_TIMER_ADD, _TIMER_FIRE, _TIMER_CANCEL = _R["TIMER_ADD"], _R["TIMER_FIRE"], _R["TIMER_CANCEL"]
_FD_OPEN, _FD_CLOSE = _R["FD_OPEN"], _R["FD_CLOSE"]
_REQUEST_BEGIN, _REQUEST_END = _R["REQUEST_BEGIN"], _R["REQUEST_END"]
_LOOP_ITERATION, _SLOW_STEP = _R["LOOP_ITERATION"], _R["SLOW_STEP"]
_CORO_NEVER_AWAITED, _TASK_NAME = _R["CORO_NEVER_AWAITED"], _R["TASK_NAME"]
_WANTED = frozenset((_TASK_CREATE, _STEP_BEGIN, _STEP_END, _TASK_DONE, _TIMER_ADD, _TIMER_FIRE,
                     _TIMER_CANCEL, _FD_OPEN, _FD_CLOSE, _REQUEST_BEGIN, _REQUEST_END,
                     _LOOP_ITERATION, _SLOW_STEP, _CORO_NEVER_AWAITED, _TASK_NAME))

KEEP_TIMERS = 100_000     # pending timers remembered for lateness; the oldest are forgotten

_MISSING_ALWAYS = {
    "await chains": "the probe's step records do not say what a task awaits (use "
                    "`coroscope bt` for the await chain of a live task)",
}
# what diag.instrument cannot see on a stock loop (its module docstring has the details)
_MISSING_BY_LOOP = {
    "asyncio": {
        "scheduling lag": "a stock asyncio loop publishes no timer-fire records, so timer "
                          "lateness is not known: the lag shown is the tasks' time in the ready "
                          "queue only (run it on the coroscope runtime to see both)",
        "slow callbacks": "on a stock asyncio loop only task steps are timed: a slow plain "
                          "callback (data_received, call_soon) raises no blocked-loop warning",
    },
    "uvloop": {
        "loop": "uvloop publishes task records only: no loop iterations, poll time, io or "
                "timer records (run it on the coroscope runtime to see them)",
        "slow callbacks": "on uvloop only task steps are timed: a slow plain callback raises "
                          "no blocked-loop warning",
        # not "scheduled delay...": the Sched column still has first steps and self-wakes
        "wakeup delay": "without loop iteration records, the time a woken task waits in the "
                        "ready queue is not known; Sched counts first steps and self-wakes only",
    },
}


def _frames(stack: str, innermost_first: bool) -> tuple[str, ...]:
    lines = tuple(line for line in stack.splitlines() if line.strip())
    return tuple(reversed(lines)) if innermost_first else lines


def _slow_stack(text: str) -> tuple[str, ...]:
    # "task NAME (ID) suspended at:\n<frames, outermost first>" or "callback NAME"
    head, _, rest = text.partition("\n")
    return _frames(rest, innermost_first=False) if rest else (head,) if head else ()


class ProbeEventReader:
    def __init__(self, reader):
        self.reader = reader
        self.loop_kind = reader.header.loop_kind or "unknown"
        self.missing = dict(_MISSING_ALWAYS)
        self.missing.update(_MISSING_BY_LOOP.get(self.loop_kind, {}))
        self._timers: OrderedDict[int, int] = OrderedDict()
        self._lost_reported = 0

    def read(self) -> list:
        out: list = []
        try:
            records = self.reader.poll_raw()
        except (ValueError, OSError):      # mapping closed under us: nothing more to read
            return out
        convert = self._convert
        for rec in records:
            event = convert(rec)
            if event is not None:
                out.append(event)
        lost = self.reader.lost - self._lost_reported
        if lost:
            self._lost_reported = self.reader.lost
            out.append(ev.RecordsLost(lost))
        return out

    def fd_origin(self, fd: int) -> ev.FdOpened | None:
        """Who opened ``fd`` (from the probe's fd table, which survives the ring wrapping)."""
        try:
            origin = self.reader.fd_origin(fd)
        except (ValueError, OSError):
            return None
        if origin is None:
            return None
        return ev.FdOpened(0, fd, origin.kind, origin.task, _frames(origin.stack, True))

    def close(self) -> None:
        self.reader.close()

    def _convert(self, rec: tuple):
        """One raw ring record (``runtime.probefile.RECORD_FMT`` order) -> an event or None.

        Raw tuples, not the reader's decoded ``ProbeRecord``s: a loaded target writes tens of
        thousands of records a second and the dashboard shares the machine with it, so the
        per-record cost is kept to a tuple index and a dict lookup for the kinds we skip."""
        kind = rec[1]
        if kind not in _WANTED:
            return None
        ns, task = rec[4], rec[5]
        if kind == _STEP_BEGIN:
            ready_for = rec[_A]      # in the ready queue at least this long; 0 unknown
            return ev.StepBegin(ns, task, ns - ready_for if ready_for else 0, rec[_B])
        if kind == _STEP_END:
            return ev.StepEnd(ns, task)
        if kind == _LOOP_ITERATION:
            return ev.LoopIteration(ns, rec[_A], rec[_B], rec[_C])
        string = self.reader.string
        if kind == _TASK_CREATE:
            name = string(rec[_B]) or (f"Task-{rec[_E]}" if rec[_E] else "")
            return ev.TaskCreated(ns, task, name, rec[_A], string(rec[_C]),
                                  string(rec[_D]) or string(rec[_F]))
        if kind == _TASK_NAME:
            return ev.TaskRenamed(ns, task, string(rec[_B]))
        if kind == _TASK_DONE:
            outcome = pf.OUTCOMES[rec[3]] if 0 <= rec[3] < len(pf.OUTCOMES) else "?"
            return ev.TaskDone(ns, task, outcome)
        if kind == _REQUEST_BEGIN:
            return ev.RequestBegin(ns, rec[6], string(rec[_B]))
        if kind == _REQUEST_END:
            return ev.RequestEnd(ns, rec[6])
        if kind == _SLOW_STEP:
            return ev.SlowStepSeen(ns, task, rec[_A], _slow_stack(string(rec[_B])))
        if kind == _TIMER_ADD:
            self._timers[rec[_A]] = rec[_B]
            if len(self._timers) > KEEP_TIMERS:
                self._timers.popitem(last=False)
            return None
        if kind == _TIMER_FIRE:
            when = self._timers.pop(rec[_A], None)
            return None if when is None else ev.TimerLate(ns, max(0, ns - when))
        if kind == _TIMER_CANCEL:
            self._timers.pop(rec[_A], None)
            return None
        if kind == _FD_OPEN:
            fd_kind = pf.FD_KINDS[rec[3]] if 0 <= rec[3] < len(pf.FD_KINDS) else "other"
            return ev.FdOpened(ns, rec[_A], fd_kind, task, _frames(string(rec[_B]), True))
        if kind == _FD_CLOSE:
            return ev.FdClosed(ns, rec[_A])
        if kind == _CORO_NEVER_AWAITED:
            return ev.CoroNeverAwaited(ns, string(rec[_B]), string(rec[_C]) or string(rec[_D]))
        return None


def open_reader(pid: int) -> ProbeEventReader:
    """Attach to ``pid``'s probe file; CoroscopeError with one line when it cannot be."""
    try:
        from diag.probe import ProbeReader
    except ImportError as exc:
        raise CoroscopeError(f"the probe reader is not available: {exc}") from None
    return ProbeEventReader(ProbeReader.attach(pid, from_start=True))
