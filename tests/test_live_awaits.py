"""The task table's awaiting column and await chains, from reads of the target's memory.

``LiveState`` joins what the memory reader read (by probe task id) with the records: a read
older than the task's last step says so, a failed read says so, a running task shows none.
The reader itself, on real processes, is tested in tests/e2e/test_dashboard_awaits.py.
"""
from __future__ import annotations

from diag.live import events as ev
from diag.live.awaits import TORN, AwaitRead, AwaitSampler
from diag.live.state import LiveState
from diag.model.live import TargetInfo

CHAIN = ("w.py:3 worker", "asyncio/locks.py:213 Event.wait")


def state_with(*tasks: int) -> LiveState:
    state = LiveState(TargetInfo(1, "x", "asyncio"), source="test")
    for tid in tasks:
        state.apply(ev.TaskCreated(100, tid, f"t{tid}"))
        state.apply(ev.StepBegin(110, tid))
        state.apply(ev.StepEnd(120, tid))
    return state


def rows(state: LiveState) -> dict:
    return {t.id: t for t in state.snapshot(1_000).tasks}


def test_awaiting_and_chain_come_from_the_read_by_probe_id():
    state = state_with(1, 2, 3)
    state.set_awaits(500, {1: ("Event 0x10 (2 waiters, is_set=False)", CHAIN), 2: (TORN, ())}, "ok")
    got = rows(state)
    assert got[1].awaiting == "Event 0x10 (2 waiters, is_set=False)"
    assert got[1].await_chain == list(CHAIN) and got[1].awaiting_read_ns == 500
    assert got[2].awaiting == TORN and got[2].await_chain == []
    assert got[3].awaiting == "" and got[3].awaiting_read_ns == 0      # not in the read: "?"


def test_a_read_older_than_the_last_step_says_so_and_a_running_task_shows_none():
    state = state_with(1, 2)
    state.set_awaits(500, {1: ("sleep", CHAIN), 2: ("sleep", CHAIN)}, "ok")
    state.apply(ev.StepBegin(600, 1))
    state.apply(ev.StepEnd(610, 1))
    state.apply(ev.StepBegin(620, 2))                                    # running now
    got = rows(state)
    assert got[1].awaiting == "sleep (read before its last step)"
    assert got[2].state == "running" and got[2].awaiting == "" and got[2].await_chain == []


def test_a_failed_read_marks_every_task_and_says_why():
    state = state_with(1)
    sampler = AwaitSampler(1, start=False)
    sampler.latest = AwaitRead(500, error="process 1 exited while its memory was being read")
    sampler.update(state)
    snap = state.snapshot(1_000)
    assert snap.tasks[0].awaiting == "? (read failed)"
    assert snap.missing == ["await chains: read failed: process 1 exited while its memory was being read"]
    sampler.latest = AwaitRead(700, {1: ("sleep", CHAIN)}, tasks=1)
    sampler.update(state)
    snap = state.snapshot(1_000)
    assert snap.missing == [] and snap.tasks[0].awaiting == "sleep"
    assert snap.awaits_note.startswith("1 tasks, 0 torn")
