"""The dashboard's reading under a CPU budget (diag.live.probe_adapter): records over the budget
are skipped, yet the ones that carry warnings or a task's life are applied; every record is
read, skipped or lost, exactly; rates then come from the probe's counters; the screen says
how many were skipped, and the warnings panel what lost records may hide.

The probe files here are written in this process with the runtime's own writer, so the
record stream is exactly known."""
from __future__ import annotations

import asyncio
import functools
import os
import time

from textual.widgets import Static

from dashboards.app import DashboardApp
from diag.live import events as ev
from diag.live.probe_adapter import MIN_RECORDS_PER_READ, ProbeEventReader, ReadBudget
from diag.live.source import LiveSource
from diag.live.state import LiveState
from diag.probe import ProbeReader
from runtime import probefile as pf

R = pf.Rec
S = 1_000_000_000
C = pf.COUNTER_INDEX


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Target:
    """A probe file and a writer that writes what a small server would: one long-lived task
    (id 1), and per request a child task that lives and dies inside it."""

    def __init__(self, tmp_path, ring: int = 8192):
        layout = pf.Layout.default(ring_records=ring, strings_size=1 << 16, fd_entries=64)
        self.w = pf.ProbeWriter.create(path=str(tmp_path / "t.probe"), layout=layout)
        self.ns = time.monotonic_ns()         # the reader reads the counters on this clock
        self.next_task = 100
        self.records = 0

    def emit(self, kind, task=0, request=0, a=0, b=0, c=0, d=0, aux=0):
        self.ns += 100                        # slower than real time: never ahead of the reader
        self.w.emit(kind, 0, aux, task, request, self.ns, a, b, c, d)
        self.records += 1

    def create(self, task, name, parent=1):
        self.emit(R.TASK_CREATE, task, a=parent, b=self.w.intern(name), c=self.w.intern(name))
        self.w.counters[C["tasks_created"]] += 1

    def requests(self, n: int) -> None:
        for _ in range(n):
            self.next_task += 1
            child, rid = self.next_task, self.next_task
            self.emit(R.REQUEST_BEGIN, 1, rid, b=self.w.intern("ping"))
            self.create(child, f"child-{child}")
            self.emit(R.STEP_BEGIN, child, rid, a=500, b=pf.WAKE_FIRST)
            self.emit(R.STEP_END, child, rid, a=1000)
            self.emit(R.TASK_DONE, child, rid)
            self.emit(R.STEP_BEGIN, 1, rid, a=500, b=pf.WAKE_WOKEN)
            self.emit(R.STEP_END, 1, rid, a=1000)
            self.emit(R.REQUEST_END, 1, rid, a=7000)
            self.emit(R.LOOP_ITERATION, a=2000, b=1, c=2)
            self.w.counters[C["requests_done"]] += 1
            self.w.counters[C["loop_iterations"]] += 1
        self.w.flush_counters()

    def reader(self, share: float | None, clock=None) -> ProbeEventReader:
        adapter = ProbeEventReader(ProbeReader.open_file(self.w.path), share)
        if share:
            adapter.budget = ReadBudget(share, clock=clock)
        return adapter


def test_the_budget_bounds_what_a_read_decodes_and_refuses_when_spent():
    clock = Clock()
    budget = ReadBudget(0.05, clock=clock)
    budget.cost_s, budget.scan_s = 10e-6, 0.5e-6
    assert budget.plan(10**6) is None                 # the first read takes the whole ring
    clock.now += 0.1                                  # 0.05 s banked + 0.005 s accrued
    decode = budget.plan(20_000)
    assert MIN_RECORDS_PER_READ <= decode < 20_000
    assert decode * budget.cost_s + (20_000 - decode) * budget.scan_s <= budget.tokens
    assert budget.plan(10) == max(10, MIN_RECORDS_PER_READ)       # a trickle: all of it
    budget.spent(0.2, 0, 0.0, 0, 0.0)                 # a read that cost far more
    clock.now += 0.1
    assert budget.plan(10**6) == 0                    # nothing left: no read now
    clock.now += 3.0                                  # it refills, up to one second's worth
    assert budget.plan(100) == MIN_RECORDS_PER_READ and budget.tokens <= 0.05
    budget.spent(0.002, 1000, 0.002, 0, 0.0)
    assert 2e-6 < budget.cost_s < 10e-6               # a moving average of what reads cost


def test_records_over_the_budget_are_skipped_but_warnings_and_task_lives_are_kept(tmp_path):
    t = Target(tmp_path)
    clock = Clock()
    t.create(1, "server", parent=0)
    t.emit(R.STEP_BEGIN, 1, a=0, b=pf.WAKE_FIRST)
    t.emit(R.STEP_END, 1, a=1000)
    adapter = t.reader(0.05, clock)
    adapter.budget.cost_s = 1e-3              # dear records: a read decodes the minimum only
    state = LiveState()
    adapter.read_into(state)                  # the first read takes everything
    assert (state.records, state.skipped, state.lost) == (3, 0, 0)

    t.requests(100)
    t.create(7, "parked")                     # alive, never done: its create must be applied
    t.emit(R.SLOW_STEP, 1, a=300_000_000, b=t.w.intern("task server (1) suspended at:\napp.py:9 in serve"))
    t.w.counters[C["slow_steps"]] += 1
    t.emit(R.FD_OPEN, 1, a=9, b=t.w.intern("app.py:12 in leak"), c=1, aux=pf.FdKind.SOCKET)
    t.emit(R.CORO_NEVER_AWAITED, 1, b=t.w.intern("forgotten"), c=t.w.intern("app.py:30"))
    t.requests(700)                           # 6,304 records since the first read in all
    clock.now += 0.05
    adapter.read_into(state)

    assert state.records + state.skipped + state.lost == t.records      # every one accounted
    assert state.lost == 0 and state.skipped > 5000
    assert state.records - 3 == MIN_RECORDS_PER_READ + 4       # the newest, and the 4 rare ones
    assert [s.duration_ns for s in state.slow] == [300_000_000]
    assert state.slow[0].stack == ["app.py:9 in serve"]
    assert state.fd_origin[9].stack == ["app.py:12 in leak"]
    assert [n.coro for n in state.never_awaited] == ["forgotten"]
    # children created and done inside the skipped span leave nothing behind: no stale task
    assert set(state.tasks) == {1, 7} and state.tasks[7].name == "parked"
    snap = state.snapshot()
    assert snap.skipped_records == state.skipped
    assert not [m for m in snap.missing if m.startswith("warnings:")]   # nothing was lost


def test_rates_come_from_the_counters_when_records_were_skipped(tmp_path):
    t = Target(tmp_path, ring=16384)
    clock = Clock()
    adapter = t.reader(0.05, clock)
    adapter.budget.cost_s = 1e-3
    state = LiveState()
    adapter.read_into(state)                  # nothing yet; the counters' first reading
    t.ns = time.monotonic_ns()
    t.requests(1000)
    clock.now += 0.05
    adapter.read_into(state)
    assert state.skipped > 0
    snap = state.snapshot(t.ns)
    # all 1000 requests were ended now (the counter), though few of their records were read
    assert sum(snap.requests.rate.values) == 1000
    assert sum(snap.loop.iterations_per_s.values) == 1000
    assert state.requests_total < 100


def test_rates_from_records_when_nothing_was_skipped(tmp_path):
    t = Target(tmp_path)
    adapter = t.reader(None)
    state = LiveState()
    adapter.read_into(state)
    t.requests(300)
    adapter.read_into(state)
    assert (state.skipped, state.lost, state.records) == (0, 0, t.records)
    snap = state.snapshot(t.ns)
    assert sum(snap.requests.rate.values) == 300 == state.requests_total
    assert snap.requests.window_max_ms == 0.0007           # request end - begin: 7 records


def test_lost_records_are_said_on_the_warnings_panel():
    state = LiveState()
    state.counters_seen(5 * S, 0, 0, 2)
    state.records_unread(6 * S, lost=1234, skipped=0)
    state.counters_seen(6 * S, 10, 10, 5)            # 3 slow steps since; none read
    (note,) = [m for m in state.snapshot().missing if m.startswith("warnings:")]
    assert "1234 records were overwritten before they were read" in note
    assert "the target counted 3 slow steps since we attached; 0 were read" in note


def test_the_thread_slots_say_which_tasks_run_after_a_skip():
    state = LiveState()
    state.step_begin(10 * S, 1, 0, pf.WAKE_FIRST)      # its step end was skipped
    state.step_end(10 * S + 5, 2)
    state.running_now({2: 11 * S})                     # the slot: task 2 is in a step now
    assert state.tasks[1].step_begin_ns == 0 and state.tasks[2].step_begin_ns == 11 * S


def sync(test):
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return wrapper


@sync
async def test_the_screen_shows_skipped_and_lost_records(tmp_path):
    t = Target(tmp_path, ring=1024)
    clock = Clock()
    adapter = t.reader(0.05, clock)
    adapter.budget.cost_s = 1e-3
    source = LiveSource(os.getpid(), adapter)      # this process stands in for the target
    app = DashboardApp(source, auto_refresh=False)
    async with app.run_test(size=(120, 40)) as pilot:
        t.requests(100)                           # 900 records: the ring holds them all
        clock.now += 0.05
        await pilot.press("ctrl+r")
        await pilot.pause()
        snap = app.snapshot
        assert snap.skipped_records > 0 and snap.lost_records == 0
        status = str(app.query_one("#status", Static).render())
        assert f"skipped {snap.skipped_records}" in status and "lost" not in status
        t.requests(1000)                          # 9,000 more: the writer laps the reader
        clock.now += 0.05
        await pilot.press("ctrl+r", "2")
        await pilot.pause()
        snap = app.snapshot
        assert snap.lost_records > 0
        assert snap.records + snap.skipped_records + snap.lost_records == t.records
        assert f"lost {snap.lost_records}" in str(app.query_one("#status", Static).render())
        shown = str(app.query_one("#warnings-body", Static).render())
        assert f"{snap.lost_records} records were overwritten before they were read" in shown


def test_after_a_loss_tasks_not_seen_again_are_unknown_and_the_counter_bounds_them():
    state = LiveState()
    state.apply(ev.TaskCreated(1 * S, 1, "main"))           # long-lived, idle since
    for task in (2, 3, 4):                                  # short-lived children ...
        state.apply(ev.TaskCreated(2 * S + task, task, f"child-{task}"))
    state.apply(ev.TaskCreated(2 * S + 9, 9, "worker"))
    state.records_unread(3 * S, lost=500, skipped=0)        # ... whose done records were lost
    state.step_begin(3 * S + 1, 9, 0, pf.WAKE_WOKEN)       # the worker is seen again
    state.step_end(3 * S + 2, 9)
    states = {t.id: t.state for t in state.snapshot(4 * S).tasks}
    assert states == {1: "unknown", 2: "unknown", 3: "unknown", 4: "unknown", 9: "idle"}
    # the target says 2 tasks are alive: the unsure ones most recently active go first
    state.counters_seen(4 * S, 0, 0, 0, tasks_alive=2)
    assert set(state.tasks) == {1, 9} and state.tasks_forgotten == 3
