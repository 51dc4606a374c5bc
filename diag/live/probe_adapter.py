"""Probe-file records (``diag.probe``) -> the dashboard's state (``diag.live.state``).

The one module of the dashboard that knows the probe reader. It attaches read-only (the
reader only loads from its own mapping of the target's shared memory) and folds the records
into a ``LiveState``; timer add/fire pairs become scheduling-lag samples, and so does each step's
time in the ready queue (from the step begin's wake kind and ready time); the reader's exact counts
of records lost to a lapping writer, and skipped, go to the state too. What the probe records
do not carry is listed in ``missing`` so the dashboard can say so instead of showing zeros.

Why records are folded here and not turned into events
------------------------------------------------------
A loaded target writes 100,000 to 200,000 records a second, and on a small machine every
microsecond the dashboard spends per record is taken from the target. So ``read_into`` decodes
the ring a run at a time (``ProbeReader.poll_runs``) with a struct that unpacks only the fields
used, and the common kinds (step begin and end, loop iteration, request begin and end: most
records) go straight to the state's methods in one tight loop; only the rarer kinds (task
create, name and done, slow step, fd open and close, timers, never awaited) are built into
``diag.live.events`` objects. About 1 us a record, where one event per record cost 4.

Why some records are skipped on purpose
---------------------------------------
Even at 1 us a record, following a target that writes 200,000 a second would take a fifth
of a core. A ``ReadBudget`` (a token bucket of CPU time; the dashboard's share is
``DASHBOARD_CPU_SHARE``) lets each read decode only the newest records it can pay for and pass
over the older rest with ``ProbeReader.skip``: a bulk scan of their kind bytes (a fraction of
a microsecond a record) that still hands back every record of the rare kinds, so a slow step,
a never-awaited coroutine or an fd open is applied even when skipped. Tasks created and done
inside one skipped span are over and warn of nothing: they are dropped before being decoded
(under load, nearly all of them), and the others are applied, so the task table has no task
left "alive" because its end was skipped. What skipping costs is exactness of the per-task
figures (polls, busy time) and of the latencies, which are then a sample; the rates come from
the probe's live counters (``LiveState.counters_seen``) and which tasks are running from the
thread slots; the status line shows how many records were skipped. When even the scans would
go over the share, the bucket runs dry and a read waits: the ring may then lap the reader, the
records it overwrote are counted lost, and the warnings panel says what they may have hidden
(with the slow-step counter, exactly how many slow steps). ``open_reader`` without a budget
(`coroscope check`, the doctor) reads every record it can.
"""
from __future__ import annotations

import struct
import time
from collections import OrderedDict

from diag.errors import CoroscopeError
from diag.probe import kind_table

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
_RECORDS_WRITTEN, _REQUESTS_DONE, _LOOP_ITERATIONS, _SLOW_STEPS, _TASKS_ALIVE = (
    pf.COUNTER_INDEX["records_written"], pf.COUNTER_INDEX["requests_done"],
    pf.COUNTER_INDEX["loop_iterations"], pf.COUNTER_INDEX["slow_steps"],
    pf.COUNTER_INDEX["tasks_alive"])
_WANTED = frozenset((_TASK_CREATE, _STEP_BEGIN, _STEP_END, _TASK_DONE, _TIMER_ADD, _TIMER_FIRE,
                     _TIMER_CANCEL, _FD_OPEN, _FD_CLOSE, _REQUEST_BEGIN, _REQUEST_END,
                     _LOOP_ITERATION, _SLOW_STEP, _CORO_NEVER_AWAITED, _TASK_NAME))

# The fields the tight loop needs, unpacked from a whole record: seq, kind, ns, task, request,
# a, b, c (everything else is padding to the struct, which costs nothing).
_LEAN = struct.Struct("<QH6xQQQqqq32x")
assert _LEAN.size == pf.RECORD_SIZE and pf.RECORD_FMT == "<QHHIQQQqqqqqqQ"
# (the kind is half-word 4 of a record's 48 and the task id word 3 of its 12: _rare_records)
# The kinds ``skip`` still returns: every one that can raise or clear a warning, or name a task.
_RARE = (_TASK_CREATE, _TASK_NAME, _TASK_DONE, _SLOW_STEP, _FD_OPEN, _FD_CLOSE,
         _CORO_NEVER_AWAITED)

_LIFE = frozenset((_TASK_CREATE, _TASK_NAME, _TASK_DONE))

DASHBOARD_CPU_SHARE = 0.05    # of one core, for reading the ring (scans included; not drawing)
MIN_RECORDS_PER_READ = 256    # decoded when a read happens: a trickle is always read whole
BANK_S = 1.0                  # the budget saves up for at most this much wall time
FIRST_COST_S = 1e-6           # costs per record assumed until measured: decoding,
FIRST_SCAN_S = 0.3e-6         # and scanning a skipped record

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


class ReadBudget:
    """A token bucket of CPU time: reading may use ``share`` of one core. Tokens (CPU seconds)
    accrue with wall time, up to ``BANK_S`` seconds' worth; each read spends what it measured
    (thread CPU time). A read plans with what is in the bucket: scan the records it cannot
    decode (``scan_s`` each) and decode as many as the rest pays for (``cost_s`` each), both
    measured as moving averages. An empty bucket means no read this time: the ring may then
    lap the reader, and those records are counted lost (the warnings panel says what that
    means). So the share holds however fast the target writes."""

    def __init__(self, share: float, clock=time.monotonic):
        self.share = share
        self.clock = clock
        self.cost_s = FIRST_COST_S         # CPU seconds to decode and fold one record
        self.scan_s = FIRST_SCAN_S         # CPU seconds to scan one skipped record
        self.tokens = share * BANK_S
        self.last: float | None = None

    def plan(self, backlog: int) -> int | None:
        """Records to decode now, of ``backlog`` waiting: None for no limit (the first read
        takes the whole ring), 0 for no read at all (the bucket is empty)."""
        now = self.clock()
        last, self.last = self.last, now
        if last is None:
            return None
        self.tokens = min(self.share * BANK_S, self.tokens + self.share * (now - last))
        if self.tokens <= 0:
            return 0
        if backlog * self.cost_s <= self.tokens:
            return max(backlog, MIN_RECORDS_PER_READ)
        decode = (self.tokens - backlog * self.scan_s) / max(self.cost_s - self.scan_s, 1e-9)
        return max(MIN_RECORDS_PER_READ, int(decode))

    def spent(self, cpu_s: float, decoded: int, decode_s: float, scanned: int,
              scan_s: float) -> None:
        self.tokens -= cpu_s
        if decoded >= 100:
            self.cost_s = 0.8 * self.cost_s + 0.2 * (decode_s / decoded)
        if scanned >= 1000:
            self.scan_s = 0.8 * self.scan_s + 0.2 * (scan_s / scanned)


class ProbeEventReader:
    def __init__(self, reader, cpu_share: float | None = None):
        self.reader = reader
        self.loop_kind = reader.header.loop_kind or "unknown"
        self.missing = dict(_MISSING_ALWAYS)
        self.missing.update(_MISSING_BY_LOOP.get(self.loop_kind, {}))
        self._timers: OrderedDict[int, int] = OrderedDict()
        self._lost_reported = 0
        self.budget = ReadBudget(cpu_share) if cpu_share else None
        self._rare = kind_table(_RARE)
        self.decoded = 0              # records decoded by read_into, for benchmarks
        self.decode_cpu_s = 0.0

    def current_loop_kind(self) -> str:
        """The loop the header names now: a loop names itself when it is created, which can be
        after we attached (``ProbeWriter.set_loop_kind``). What it cannot show is updated."""
        off = pf.HEADER_OFFSETS["loop_kind"]
        kind = bytes(self.reader.mm[off:off + 16]).rstrip(b"\0").decode(errors="replace") or "unknown"
        if kind != self.loop_kind:
            self.loop_kind = kind
            self.missing = dict(_MISSING_ALWAYS)
            self.missing.update(_MISSING_BY_LOOP.get(kind, {}))
        return kind

    def read(self) -> list:
        """The records published since the last call, as events (every one: no budget)."""
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

    def read_into(self, state, whole: bool = False) -> None:
        """Fold what the ring holds now into ``state`` (a ``LiveState``), within the budget
        (``whole``: all of it, budget or not: the last read of a target that exited)."""
        reader = self.reader
        lost0, skipped0 = reader.lost, reader.skipped
        cpu0 = time.thread_time()
        try:
            now_ns = time.monotonic_ns()
            counters = pf.COUNTERS_STRUCT.unpack_from(reader.mm, reader.layout.counters_off)
            written = counters[_RECORDS_WRITTEN]
            backlog = written - reader.next_seq + 1
            allowance = self.budget.plan(backlog) if self.budget and not whole else None
            if allowance == 0:
                return                     # the budget is spent: read later, in a bigger batch
            rare, dropped = [], 0
            if allowance is not None and backlog > allowance:
                rare, dropped = _rare_records(reader.skip(written + 1 - allowance, self._rare))
            runs = reader.poll_runs(allowance or 1 << 30)
        except (ValueError, OSError):      # mapping closed under us: nothing more to read
            return
        # What went unread comes before what was read: tell the state first, so a task seen
        # after a loss is known to be alive (LiveState.records_unread).
        lost, skipped = reader.lost - lost0, reader.skipped - skipped0 + dropped
        self._lost_reported = reader.lost
        state.records_unread(now_ns, lost, skipped)
        handle, convert = state.handle, self._convert
        last_ns = 0
        for rec in rare:                   # they come before the runs
            event = convert(rec)
            if event is not None:
                handle(event)
            last_ns = rec[4]
        cpu2 = time.thread_time()
        n, run_last_ns = self._fold(runs, state)
        cpu3 = time.thread_time()
        self.decoded += n
        self.decode_cpu_s += cpu3 - cpu2
        if self.budget is not None:
            self.budget.spent(cpu3 - cpu0, n, cpu3 - cpu2, skipped, cpu2 - cpu0)
        state.records_read(n + len(rare), max(last_ns, run_last_ns))
        state.counters_seen(now_ns, counters[_REQUESTS_DONE], counters[_LOOP_ITERATIONS],
                            counters[_SLOW_STEPS], counters[_TASKS_ALIVE] if lost else None)
        if lost or skipped:
            try:
                slots = pf.read_slots(reader.mm, reader.layout)
            except (ValueError, OSError):
                return
            state.running_now({task: start for _i, _tid, task, _req, start, _ident, _s in slots
                               if task and start})

    def _fold(self, runs, state) -> tuple[int, int]:
        """The tight loop: every record of ``runs`` into ``state``. Returns (records, newest
        ns)."""
        step_begin, step_end = state.step_begin, state.step_end
        loop_iteration, request_begin, request_end = (state.loop_iteration, state.request_begin,
                                                      state.request_end)
        handle, convert, unpack_full = state.handle, self._convert, pf.RECORD_STRUCT.unpack_from
        name = self.reader.string       # cached by the reader: a few names recur
        n = last_ns = 0
        for first, data in runs:
            ns = 0
            for seq, kind, ns, task, request, a, b, c in _LEAN.iter_unpack(data):
                if kind == _STEP_END:
                    step_end(ns, task)
                elif kind == _STEP_BEGIN:
                    step_begin(ns, task, ns - a if a else 0, b)
                elif kind == _LOOP_ITERATION:
                    loop_iteration(ns, a, c)
                elif kind == _REQUEST_END:
                    request_end(ns, request, name(b) if b else "")
                elif kind == _REQUEST_BEGIN:
                    request_begin(ns, request, name(b) if b else "")
                elif kind in _WANTED:
                    event = convert(unpack_full(data, (seq - first) * pf.RECORD_SIZE))
                    if event is not None:
                        handle(event)
            n += len(data) // pf.RECORD_SIZE
            if ns > last_ns:
                last_ns = ns
        return n, last_ns

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
            return ev.RequestEnd(ns, rec[6], string(rec[_B]) if rec[_B] else "")
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


def _rare_records(runs: list[tuple[int, bytes, list[int]]]) -> tuple[list[tuple], int]:
    """The rare records ``ProbeReader.skip`` marked in a skipped span, decoded, less the
    create, name and done records of tasks that began and ended inside the span (and had no
    slow step there): such a task is over, raises no warning, and would only push a task we did
    see out of the finished list. Under load that is nearly all of them, so they are told
    apart by kind and task id (read from the run's bytes) before anything is decoded.
    Returns the records kept, in order, and how many were dropped (they count as skipped)."""
    marks = []          # (kind, task, data, index)
    for _first, data, indices in runs:
        kinds = memoryview(data).cast("H")[4::48].tolist()
        tasks = memoryview(data).cast("Q")[3::12].tolist()
        marks += [(kinds[i], tasks[i], data, i) for i in indices]
    created = {task for kind, task, _d, _i in marks if kind == _TASK_CREATE}
    over = created & {task for kind, task, _d, _i in marks if kind == _TASK_DONE}
    if over:
        over -= {task for kind, task, _d, _i in marks if kind == _SLOW_STEP}
    unpack_from, size = pf.RECORD_STRUCT.unpack_from, pf.RECORD_SIZE
    kept = [unpack_from(data, i * size) for kind, task, data, i in marks
            if task not in over or kind not in _LIFE]
    return kept, len(marks) - len(kept)


def open_reader(pid: int, cpu_share: float | None = None) -> ProbeEventReader:
    """Attach to ``pid``'s probe file; CoroscopeError with one line when it cannot be.
    ``cpu_share``: the decoding budget (a share of one core; None: read every record)."""
    try:
        from diag.probe import ProbeReader
    except ImportError as exc:
        raise CoroscopeError(f"the probe reader is not available: {exc}") from None
    return ProbeEventReader(ProbeReader.attach(pid, from_start=True), cpu_share)
