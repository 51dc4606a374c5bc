"""LiveState: what a process is doing, folded from its event stream, ready to snapshot.

The state is built incrementally, one event at a time, because the probe ring is read as a
stream and may be lapped: every aggregate here is a running one (counts, sums, per-second
buckets), never a list of all events. ``snapshot(now_ns)`` freezes it into the plain
``diag.model.live.LiveSnapshot`` that views draw, recordings store and lints check.

When the reader skips records (its CPU budget) or loses them (the ring lapped it), the
per-second rates of the seconds concerned come from the probe's live counters instead of
the records (``counters_seen``, ``records_unread``); the probe adapter calls the plain-argument
methods (``step_begin``, ``step_end``, ...) directly for the common records, without events.

Bounded memory: per-second series keep ``SERIES_S`` seconds; finished tasks are kept (newest
``KEEP_DONE``) so that a short-lived task can still be seen; slow steps keep the newest
``KEEP_SLOW``. Nothing here imports a view or does I/O.
"""
from __future__ import annotations

import bisect
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from diag.model.live import (
    STEP_BUCKETS_US, FdRow, FdStats, HotPath, HotPaths, LiveSnapshot, LoopStats,
    NeverAwaited, RequestStats, RouteRow, Series, SlowStep, STEP_BUCKET_LABELS, TargetInfo, TaskRow,
)

from runtime.probefile import WAKE_FIRST, WAKE_SELF, WAKE_WOKEN

from . import events as ev

SERIES_S = 120        # seconds of history in every per-second series
WINDOW_S = 10         # seconds the "window" latency figures cover
MAX_ROUTES = 200      # request names kept apart; past that they are counted under OTHER_ROUTES
OTHER_ROUTES = "(other names)"
ROUTE_LATENCIES = 1000   # a name's latency figures are over its last this many requests
KEEP_DONE = 50        # finished tasks kept for display
KEEP_SLOW = 50        # slow steps kept
KEEP_FD_SAMPLES = 60  # fd-count samples kept per kind
KEEP_NEVER_AWAITED = 50


@dataclass
class _Task:
    id: int
    name: str
    coro: str
    location: str
    parent_id: int
    created_ns: int
    create_seen: bool = False    # created_ns is the create record's (not when we learnt of it)
    polls: int = 0
    busy_ns: int = 0
    scheduled_ns: int = 0
    step_begin_ns: int = 0       # != 0 exactly while a step runs
    last_step_end_ns: int = 0
    self_wakes: int = 0
    wakes: int = 0
    awaiting: str = ""
    await_chain: tuple[str, ...] = ()
    done_ns: int = 0             # != 0 once done
    # records were lost (the ring lapped the reader) since this task's last record: it may
    # have ended unseen. Shown as state "unknown" until a step of it is read again.
    unsure: bool = False
    outcome: str = ""
    histogram: list[int] = field(default_factory=lambda: [0] * len(STEP_BUCKET_LABELS))


@dataclass
class _Second:
    """Everything that happened in one second of target time."""
    requests: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    iterations: int = 0
    poll_ns: int = 0
    callbacks: int = 0
    lags_ns: list[int] = field(default_factory=list)
    # From the probe's live counters, sampled at each read (``counters_seen``): exact even when
    # records were skipped. ``partial``: records of this second were skipped or lost, so the
    # rates come from these and not from the records.
    counted_requests: int = 0
    counted_iterations: int = 0
    partial: bool = False
    # how many leading values of latencies_ns / lags_ns are known sorted: a snapshot sorts a
    # second's samples in place once, not at every refresh for the whole series
    latencies_sorted: int = 0
    lags_sorted: int = 0

    def latencies(self) -> list[int]:
        if self.latencies_sorted != len(self.latencies_ns):
            self.latencies_ns.sort()
            self.latencies_sorted = len(self.latencies_ns)
        return self.latencies_ns

    def lags(self) -> list[int]:
        if self.lags_sorted != len(self.lags_ns):
            self.lags_ns.sort()
            self.lags_sorted = len(self.lags_ns)
        return self.lags_ns


def same_kind(proc_kind: str, probe_kind: str) -> bool:
    """Whether a /proc kind and a probe record's kind can name the same fd."""
    if proc_kind == probe_kind or "unknown" in (proc_kind, probe_kind) or "other" in (proc_kind, probe_kind):
        return True
    return {proc_kind, probe_kind} <= {"file", "device", "memfd"}


def _bucket(duration_ns: int) -> int:
    return bisect.bisect_right(STEP_BUCKETS_US, duration_ns // 1000)


def _requests_in(bucket: _Second) -> int:
    """Requests ended in that second: counted by the target if records of it went unread."""
    return bucket.counted_requests if bucket.partial else bucket.requests


def _iterations_in(bucket: _Second) -> int:
    """Loop iterations in that second: counted by the target if records of it went unread."""
    return bucket.counted_iterations if bucket.partial else bucket.iterations


def _percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile: the smallest value with at least q of the values at or below."""
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


class _Route:
    __slots__ = ("ended", "latencies_ns")

    def __init__(self):
        self.ended = 0
        self.latencies_ns: deque[int] = deque(maxlen=ROUTE_LATENCIES)


class LiveState:
    def __init__(self, target: TargetInfo | None = None, source: str = ""):
        self.target = target or TargetInfo()
        self.source = source
        self.tasks: dict[int, _Task] = {}
        self.done: OrderedDict[int, _Task] = OrderedDict()   # oldest finished first
        self.requests_open: dict[int, int] = {}              # request id -> begin ns
        self.request_open_names: dict[int, str] = {}         # request id -> name at begin
        self.requests_total = 0
        self.routes: dict[str, _Route] = {}                  # name -> requests of that name
        self.seconds: OrderedDict[int, _Second] = OrderedDict()
        self._now_second = -1                                # the newest bucket, for step_begin
        self._now_bucket = _Second()
        self.loop_iterations = 0
        self.slow: deque[SlowStep] = deque(maxlen=KEEP_SLOW)
        self.never_awaited: deque[NeverAwaited] = deque(maxlen=KEEP_NEVER_AWAITED)
        self.fd_origin: dict[int, FdRow] = {}                # from fd open records
        self.fd_sample: ev.FdSample | None = None            # newest /proc sample
        self.fd_trend: dict[str, list[int]] = {}
        self.fd_samples = 0
        self.fd_source = ""
        self.hot = HotPaths(note="not available: no sampler attached")
        self.syscalls: dict[str, float] = {}
        self.syscalls_note = "not available: no syscall counter attached"
        self.missing: dict[str, str] = {}
        self.records = 0
        self.lost = 0                # records overwritten before they were read: nothing known
        self.skipped = 0             # records passed unread on purpose (the reader's CPU budget)
        self.last_ts_ns = 0
        self._counted: tuple[int, int] | None = None      # last (requests_done, loop_iterations)
        self.counted_slow_steps: int | None = None        # slow steps the target counted since
        self.slow_steps_seen = 0                          # we attached, and those we read
        self._slow_at = 0
        self._last_read_ns = 0                            # when records_unread was last told
        self.tasks_forgotten = 0     # tasks dropped as likely ended unseen (counters_seen)
        # the last read of await chains from the target's memory (diag.live.awaits)
        self.awaits: dict[int, tuple[str, tuple[str, ...]]] = {}
        self.awaits_ns = 0
        self.awaits_note = ""
        self.awaits_failed = False

    # -- feeding ---------------------------------------------------------------------------

    def apply_all(self, events) -> None:
        """``apply`` for each event, with the bookkeeping hoisted out of the loop (a loaded
        target publishes tens of thousands of records a second; this is the dashboard's hot
        loop)."""
        handlers = _HANDLERS
        last = self.last_ts_ns
        n = 0
        for event in events:
            n += 1
            if event.ts_ns > last:
                last = event.ts_ns
            handler = handlers.get(type(event))
            if handler is not None:
                handler(self, event)
        self.records += n
        self.last_ts_ns = last

    def apply(self, event: ev.Event) -> None:
        self.records += 1
        if event.ts_ns > self.last_ts_ns:
            self.last_ts_ns = event.ts_ns
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _task(self, task_id: int, ts_ns: int) -> _Task:
        task = self.tasks.get(task_id)
        if task is None:
            # Created before we attached, or its create record was lost: learn it now.
            task = self.tasks[task_id] = _Task(task_id, f"task-{task_id}", "", "", 0, ts_ns)
        return task

    def _second(self, ts_ns: int) -> _Second:
        sec = ts_ns // 1_000_000_000
        bucket = self.seconds.get(sec)
        if bucket is None:
            bucket = self.seconds[sec] = _Second()
            while len(self.seconds) > SERIES_S:
                self.seconds.popitem(last=False)
            if sec > self._now_second:
                self._now_second, self._now_bucket = sec, bucket
        return bucket

    def _on_task_created(self, e: ev.TaskCreated) -> None:
        self.tasks[e.task_id] = _Task(e.task_id, e.name or f"task-{e.task_id}", e.coro,
                                      e.location, e.parent_id, e.ts_ns, create_seen=True)

    def _on_task_renamed(self, e: ev.TaskRenamed) -> None:
        task = self.tasks.get(e.task_id) or self.done.get(e.task_id)
        if task is not None and e.name:
            task.name = e.name

    def _on_step_begin(self, e: ev.StepBegin) -> None:
        self.step_begin(e.ts_ns, e.task_id, e.queued_ns, e.wake)

    def step_begin(self, ts_ns: int, task_id: int, queued: int, wake: int) -> None:
        """A step began (the event's fields as arguments: the probe adapter's hot path calls
        this once per step without building an event)."""
        task = self.tasks.get(task_id) or self._task(task_id, ts_ns)
        task.step_begin_ns = ts_ns
        task.unsure = False
        # The probe's queued time is an upper bound (the end of the previous loop iteration);
        # for these two kinds the exact moment is known here (runtime.probefile explains).
        if wake == WAKE_SELF:
            task.self_wakes += 1
            if task.last_step_end_ns:
                queued = task.last_step_end_ns
        elif wake == WAKE_WOKEN:
            task.wakes += 1
        elif wake == WAKE_FIRST and task.create_seen:
            queued = task.created_ns
        if queued and queued <= ts_ns:
            lag = ts_ns - queued
            task.scheduled_ns += lag
            bucket = (self._now_bucket if ts_ns // 1_000_000_000 == self._now_second
                      else self._second(ts_ns))
            bucket.lags_ns.append(lag)

    def _on_step_end(self, e: ev.StepEnd) -> None:
        self.step_end(e.ts_ns, e.task_id, e.awaiting, e.await_chain)

    def step_end(self, ts_ns: int, task_id: int, awaiting: str = "",
                 await_chain: tuple[str, ...] = ()) -> None:
        task = self.tasks.get(task_id) or self._task(task_id, ts_ns)
        if task.step_begin_ns:
            duration = ts_ns - task.step_begin_ns
            if duration < 0:
                duration = 0
            task.busy_ns += duration
            task.histogram[_bucket(duration)] += 1
        task.polls += 1
        task.step_begin_ns = 0
        task.last_step_end_ns = ts_ns
        task.unsure = False
        task.awaiting = awaiting
        task.await_chain = await_chain
        if awaiting == "<yield>":
            task.self_wakes += 1
        elif awaiting:
            task.wakes += 1

    def _on_task_done(self, e: ev.TaskDone) -> None:
        task = self.tasks.pop(e.task_id, None) or self._task_for_done(e)
        task.done_ns = e.ts_ns
        task.outcome = e.outcome
        task.step_begin_ns = 0
        self.done[task.id] = task
        while len(self.done) > KEEP_DONE:
            self.done.popitem(last=False)

    def _task_for_done(self, e: ev.TaskDone) -> _Task:
        return _Task(e.task_id, f"task-{e.task_id}", "", "", 0, e.ts_ns)

    def _on_slow_step(self, e: ev.SlowStepSeen) -> None:
        self.slow_steps_seen += 1
        task = self.tasks.get(e.task_id) or self.done.get(e.task_id)
        name = task.name if task else f"task-{e.task_id}"
        self.slow.append(SlowStep(e.task_id, name, e.duration_ns, e.ts_ns, list(e.stack),
                                  task.coro if task else ""))

    def _on_request_begin(self, e: ev.RequestBegin) -> None:
        self.request_begin(e.ts_ns, e.request_id, e.name)

    def request_begin(self, ts_ns: int, request_id: int, name: str = "") -> None:
        self.requests_open[request_id] = ts_ns
        if name:
            self.request_open_names[request_id] = name

    def _on_request_end(self, e: ev.RequestEnd) -> None:
        self.request_end(e.ts_ns, e.request_id, e.name)

    def request_end(self, ts_ns: int, request_id: int, name: str = "") -> None:
        begin = self.requests_open.pop(request_id, None)
        begun_as = self.request_open_names.pop(request_id, "")
        self.requests_total += 1
        bucket = self._second(ts_ns)
        bucket.requests += 1
        latency = max(0, ts_ns - begin) if begin is not None else None
        if latency is not None:
            bucket.latencies_ns.append(latency)
        name = name or begun_as
        if name:
            route = self.routes.get(name)
            if route is None:
                if len(self.routes) >= MAX_ROUTES:
                    name = OTHER_ROUTES
                    route = self.routes.get(name)
                if route is None:
                    route = self.routes[name] = _Route()
            route.ended += 1
            if latency is not None:
                route.latencies_ns.append(latency)

    def _on_loop_iteration(self, e: ev.LoopIteration) -> None:
        self.loop_iteration(e.ts_ns, e.poll_ns, e.ncallbacks)

    def loop_iteration(self, ts_ns: int, poll_ns: int, ncallbacks: int) -> None:
        self.loop_iterations += 1
        bucket = self._second(ts_ns)
        bucket.iterations += 1
        bucket.poll_ns += poll_ns
        bucket.callbacks += ncallbacks

    def _on_timer_late(self, e: ev.TimerLate) -> None:
        self._second(e.ts_ns).lags_ns.append(max(0, e.late_ns))

    def _on_fd_opened(self, e: ev.FdOpened) -> None:
        self.fd_origin[e.fd] = FdRow(e.fd, e.kind, e.task_id, e.ts_ns, list(e.stack))

    def _on_fd_closed(self, e: ev.FdClosed) -> None:
        self.fd_origin.pop(e.fd, None)

    def _on_never_awaited(self, e: ev.CoroNeverAwaited) -> None:
        self.never_awaited.append(NeverAwaited(e.coro, e.location, e.ts_ns))

    def _on_lost(self, e: ev.RecordsLost) -> None:
        self.records -= 1        # a loss notice is not a record
        self.lost += e.count

    # -- the probe adapter's bulk path -------------------------------------------------------

    def handle(self, event: ev.Event) -> None:
        """Apply one event without counting it as a record (``records_read`` counts them)."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def records_read(self, n: int, last_ts_ns: int) -> None:
        self.records += n
        if last_ts_ns > self.last_ts_ns:
            self.last_ts_ns = last_ts_ns

    def records_unread(self, ts_ns: int, lost: int, skipped: int) -> None:
        """A read at ``ts_ns`` passed ``lost`` records the writer had overwritten and
        ``skipped`` it had no time for: the seconds since the previous read take their rates
        from the counters (``counters_seen``)."""
        self.lost += lost
        self.skipped += skipped
        last, self._last_read_ns = self._last_read_ns, ts_ns
        if lost:
            for task in self.tasks.values():
                task.unsure = True
        if lost or skipped:
            now = ts_ns // 1_000_000_000
            since = max(now - SERIES_S + 1, (last or ts_ns) // 1_000_000_000)
            for sec in range(since, now + 1):
                self._second(sec * 1_000_000_000).partial = True

    def counters_seen(self, ts_ns: int, requests_done: int, loop_iterations: int,
                      slow_steps: int, tasks_alive: int | None = None) -> None:
        """The probe's live counters read at ``ts_ns``; the growth since the last reading is
        this second's, whatever the records say (they may have been skipped). ``tasks_alive``
        bounds the tasks kept as alive: past it, tasks that may have ended unseen are dropped,
        the most recently active first (the short-lived ones, whose done records are the
        likeliest to have been lost; a long-lived idle task is kept)."""
        if self._counted is not None:
            bucket = self._second(ts_ns)
            bucket.counted_requests += requests_done - self._counted[0]
            bucket.counted_iterations += loop_iterations - self._counted[1]
            self.counted_slow_steps = (self.counted_slow_steps or 0) + slow_steps - self._slow_at
        self._counted = (requests_done, loop_iterations)
        self._slow_at = slow_steps
        if tasks_alive is not None and len(self.tasks) > tasks_alive:
            unsure = sorted((t for t in self.tasks.values() if t.unsure),
                            key=lambda t: max(t.created_ns, t.last_step_end_ns), reverse=True)
            for task in unsure[:len(self.tasks) - max(tasks_alive, 0)]:
                del self.tasks[task.id]
                self.tasks_forgotten += 1

    def running_now(self, running: dict[int, int]) -> None:
        """task id -> when its step began, from the thread slots: after skipping records, the
        tasks shown running are the ones running now (a skipped step end must not leave a task
        "running" forever, and a skipped step begin must not hide one that is)."""
        for task in self.tasks.values():
            began = running.get(task.id, 0)
            if task.step_begin_ns != began:
                task.step_begin_ns = began
            if began:
                task.unsure = False

    # -- other producers -------------------------------------------------------------------

    def add_fd_sample(self, sample: ev.FdSample, source: str) -> None:
        """One /proc count of open fds by kind; one trend point per call."""
        self.fd_sample = sample
        self.fd_source = source
        self.fd_samples += 1
        kinds = set(self.fd_trend) | set(sample.by_kind)
        for kind in kinds:
            trend = self.fd_trend.setdefault(kind, [0] * (self.fd_samples - 1))
            trend.append(sample.by_kind.get(kind, 0))
            del trend[:-KEEP_FD_SAMPLES]
        # an fd number reused by a different kind is not the fd the probe saw open
        for fd in [fd for fd, row in self.fd_origin.items()
                   if fd in sample.fds and not same_kind(sample.fds[fd][0], row.kind)]:
            del self.fd_origin[fd]

    def learn_fd_origin(self, origin: ev.FdOpened) -> None:
        """Who opened an fd, learnt from outside the record stream (the probe's fd table)."""
        self.fd_origin.setdefault(origin.fd, FdRow(origin.fd, origin.kind, origin.task_id,
                                                   origin.ts_ns, list(origin.stack)))

    def set_hot_paths(self, hot: HotPaths) -> None:
        self.hot = hot

    def set_syscalls(self, per_request: dict[str, float], note: str = "") -> None:
        self.syscalls = dict(per_request)
        self.syscalls_note = note

    def set_missing(self, what: str, why: str) -> None:
        self.missing[what] = why

    def set_awaits(self, taken_ns: int, by_task: dict[int, tuple[str, tuple[str, ...]]],
                   note: str, failed: bool = False) -> None:
        """What each task (by probe id) awaited when the memory reader read it at taken_ns."""
        self.awaits = by_task
        self.awaits_ns = taken_ns
        self.awaits_note = note
        self.awaits_failed = failed

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self, now_ns: int | None = None, wall_time: float = 0.0) -> LiveSnapshot:
        now = self.last_ts_ns if now_ns is None else now_ns
        rows = [self._row(t, now) for t in self.tasks.values()]
        rows += [self._row(t, now) for t in reversed(self.done.values())]
        return LiveSnapshot(
            taken_ns=now,
            wall_time=wall_time,
            source=self.source,
            target=TargetInfo(**vars(self.target)),
            tasks=rows,
            requests=self._requests(now),
            loop=self._loop(now),
            fds=self._fds(),
            hot=HotPaths(top=[HotPath(**vars(h)) for h in self.hot.top], folded=dict(self.hot.folded),
                         samples=self.hot.samples, source=self.hot.source, note=self.hot.note),
            slow_steps=list(self.slow),
            never_awaited=list(self.never_awaited),
            records=self.records,
            lost_records=self.lost,
            skipped_records=self.skipped,
            missing=[f"{what}: {why}" for what, why in self.missing.items()] + self._unread_note(),
            awaits_note=self.awaits_note,
        )

    def _unread_note(self) -> list[str]:
        """What records the reader never saw mean for the warnings (skipped ones were still
        scanned for the records that carry warnings; lost ones were not)."""
        if not self.lost:
            return []
        note = (f"warnings: {self.lost} records were overwritten before they were read, so a slow "
                "step, never-awaited coroutine, fd open or close, or task create or done among "
                "them is not shown")
        if self.counted_slow_steps is not None and self.counted_slow_steps > self.slow_steps_seen:
            note += (f" (the target counted {self.counted_slow_steps} slow steps since we "
                     f"attached; {self.slow_steps_seen} were read)")
        return [note]

    def _row(self, t: _Task, now: int) -> TaskRow:
        end = t.done_ns or now
        running_for = max(0, now - t.step_begin_ns) if t.step_begin_ns else 0
        busy = t.busy_ns + running_for
        if t.done_ns:
            state = "done"
        elif t.step_begin_ns:
            state = "running"
        elif t.unsure:
            state = "unknown"
        elif t.awaiting == "<yield>" or t.polls == 0:
            state = "scheduled"
        else:
            state = "idle"
        age = max(0, end - t.created_ns)
        awaiting, chain, read_ns = self._awaiting(t, state)
        return TaskRow(
            id=t.id, name=t.name, coro=t.coro, location=t.location, parent_id=t.parent_id,
            state=state, polls=t.polls, busy_ns=busy, scheduled_ns=t.scheduled_ns,
            idle_ns=max(0, age - busy - t.scheduled_ns), age_ns=age,
            last_step_end_ns=t.last_step_end_ns, running_for_ns=running_for,
            self_wakes=t.self_wakes, wakes=t.wakes, awaiting=awaiting, outcome=t.outcome,
            step_histogram=list(t.histogram), await_chain=list(chain), awaiting_read_ns=read_ns,
        )

    def _awaiting(self, t: _Task, state: str) -> tuple[str, tuple[str, ...], int]:
        """(awaiting, await chain, when read): from the records when they say, else from the
        last memory read; a read older than the task's last step is said to be."""
        if t.awaiting or state in ("running", "done"):
            return t.awaiting, t.await_chain, 0
        seen = self.awaits.get(t.id)
        if seen is None:
            return ("? (read failed)" if self.awaits_failed else ""), (), 0
        awaiting, chain = seen
        if t.last_step_end_ns > self.awaits_ns:
            awaiting += " (read before its last step)"
        return awaiting, chain, self.awaits_ns

    def _span(self, now: int) -> range:
        """The whole seconds the series cover, up to and including now's."""
        if not self.seconds:
            return range(0)
        last = max(now // 1_000_000_000, next(reversed(self.seconds)))
        first = max(next(iter(self.seconds)), last - SERIES_S + 1)
        return range(first, last + 1)

    def _requests(self, now: int) -> RequestStats:
        span = self._span(now)
        rate, p50, p99, mx = [], [], [], []
        window: list[int] = []
        for sec in span:
            bucket = self.seconds.get(sec)
            lat = bucket.latencies() if bucket else []
            rate.append(float(_requests_in(bucket)) if bucket else 0.0)
            p50.append(_percentile(lat, 0.50) / 1e6)
            p99.append(_percentile(lat, 0.99) / 1e6)
            mx.append((lat[-1] if lat else 0) / 1e6)
            if sec > span.stop - 1 - WINDOW_S:
                window.extend(lat)
        window.sort()
        start = span.start if span else 0
        return RequestStats(
            total=self.requests_total, in_flight=len(self.requests_open),
            rate=Series(start, rate), p50_ms=Series(start, p50), p99_ms=Series(start, p99),
            max_ms=Series(start, mx),
            window_p50_ms=_percentile(window, 0.50) / 1e6,
            window_p99_ms=_percentile(window, 0.99) / 1e6,
            window_max_ms=(window[-1] if window else 0) / 1e6,
            syscalls_per_request=dict(self.syscalls), syscalls_note=self.syscalls_note,
            by_name=self._routes(),
        )

    def _routes(self) -> list[RouteRow]:
        in_flight: dict[str, int] = {}
        for name in self.request_open_names.values():
            in_flight[name] = in_flight.get(name, 0) + 1
        rows = []
        for name in self.routes.keys() | in_flight.keys():
            route = self.routes.get(name)
            lat = sorted(route.latencies_ns) if route else []
            rows.append(RouteRow(name, route.ended if route else 0, in_flight.get(name, 0),
                                 _percentile(lat, 0.50) / 1e6, _percentile(lat, 0.99) / 1e6,
                                 (lat[-1] if lat else 0) / 1e6))
        rows.sort(key=lambda r: (-r.ended, -r.in_flight, r.name))
        return rows

    def _loop(self, now: int) -> LoopStats:
        span = self._span(now)
        its, poll, ready, lag = [], [], [], []
        for sec in span:
            b = self.seconds.get(sec) or _Second()
            its.append(float(_iterations_in(b)))
            poll.append(b.poll_ns / 1e6)
            ready.append(b.callbacks / b.iterations if b.iterations else 0.0)
            lag.append(_percentile(b.lags(), 0.99) / 1e6)
        start = span.start if span else 0
        return LoopStats(Series(start, its), Series(start, poll), Series(start, ready),
                         Series(start, lag), self.loop_iterations)

    def _fds(self) -> FdStats:
        if self.fd_sample is not None:
            rows = []
            for fd, (kind, detail) in sorted(self.fd_sample.fds.items()):
                origin = self.fd_origin.get(fd)
                rows.append(FdRow(fd, kind, origin.task_id if origin else 0,
                                  origin.opened_at_ns if origin else 0,
                                  list(origin.stack) if origin else [], detail))
            return FdStats(dict(sorted(self.fd_sample.by_kind.items())),
                           {k: list(v) for k, v in sorted(self.fd_trend.items())},
                           rows, self.fd_source)
        # no /proc view (a replayed stream, or /proc not readable): the probe's own table
        by_kind: dict[str, int] = {}
        for row in self.fd_origin.values():
            by_kind[row.kind] = by_kind.get(row.kind, 0) + 1
        rows = [FdRow(**vars(r)) for _fd, r in sorted(self.fd_origin.items())]
        return FdStats(dict(sorted(by_kind.items())), {}, rows,
                       "probe records" if rows else "",
                       "" if rows else "not available: no fd records and no /proc sample")


_HANDLERS = {
    ev.TaskCreated: LiveState._on_task_created,
    ev.TaskRenamed: LiveState._on_task_renamed,
    ev.StepBegin: LiveState._on_step_begin,
    ev.StepEnd: LiveState._on_step_end,
    ev.TaskDone: LiveState._on_task_done,
    ev.SlowStepSeen: LiveState._on_slow_step,
    ev.RequestBegin: LiveState._on_request_begin,
    ev.RequestEnd: LiveState._on_request_end,
    ev.LoopIteration: LiveState._on_loop_iteration,
    ev.TimerLate: LiveState._on_timer_late,
    ev.FdOpened: LiveState._on_fd_opened,
    ev.FdClosed: LiveState._on_fd_closed,
    ev.CoroNeverAwaited: LiveState._on_never_awaited,
    ev.RecordsLost: LiveState._on_lost,
}
