"""The lints of diag.warnings over snapshots built from the fixed scenario."""
from __future__ import annotations

import pytest

from diag import warnings
from diag.live import events as ev
from diag.model.live import LiveSnapshot

from .test_dashboard_scenario import BLOCK_STACK, LEAK_STACK, MS, S, SECONDS, T0, build_state


def _lints(findings):
    return sorted({f.lint for f in findings})


def test_scenario_raises_exactly_its_planted_warnings():
    snap = build_state().snapshot(T0 + SECONDS * S)
    findings = warnings.check(snap)
    assert _lints(findings) == ["blocked-loop", "fd-leak", "self-wakes"]


def test_blocked_loop_carries_the_stack():
    snap = build_state().snapshot()
    (f,) = warnings.blocked_loop(snap)
    assert f.subject == "task 6 (blocker)"
    assert "250 ms" in f.message and BLOCK_STACK[-1] in f.message
    assert f.evidence == list(BLOCK_STACK)
    assert warnings.blocked_loop(snap, threshold_ms=300) == []


def test_never_yielded_only_while_a_step_runs_past_the_threshold():
    state = build_state(1)
    state.apply(ev.StepBegin(T0 + S, 2))
    assert warnings.never_yielded(state.snapshot(T0 + S + 900 * MS)) == []
    (f,) = warnings.never_yielded(state.snapshot(T0 + S + 1200 * MS))
    assert f.subject == "task 2 (worker-1)" and "1.2 s" in f.message
    state.apply(ev.StepEnd(T0 + S + 1300 * MS, 2))
    assert warnings.never_yielded(state.snapshot(T0 + S + 2000 * MS)) == []


def test_self_wakes_needs_enough_polls_and_a_majority():
    snap = build_state().snapshot()
    (f,) = warnings.self_wakes(snap)
    assert f.subject == "task 4 (spinner)" and "20 of 20" in f.message
    assert warnings.self_wakes(build_state(2).snapshot()) == []   # 8 polls < min_polls


def test_pending_forever_counts_from_the_last_step():
    state = build_state(1)
    snap = state.snapshot(T0 + 61 * S)
    stuck = [f for f in warnings.pending_forever(snap) if f.subject == "task 5 (stuck)"]
    assert len(stuck) == 1 and "Future pending" in stuck[0].message
    assert stuck[0].evidence == ["wait_forever", "Future pending"]
    # stuck's step ended at T0 + 5 ms, the workers' at T0 + 14 and 15 ms: only stuck is over 60 s
    now = T0 + 60 * S + 10 * MS
    assert [f.subject for f in warnings.pending_forever(state.snapshot(now))] == ["task 5 (stuck)"]
    assert warnings.pending_forever(state.snapshot(T0 + 50 * S)) == []


def test_never_awaited():
    state = build_state(1)
    assert warnings.never_awaited(state.snapshot()) == []
    state.apply(ev.CoroNeverAwaited(T0 + S, "fetch", "app.py:99"))
    (f,) = warnings.never_awaited(state.snapshot())
    assert f.message == "coroutine fetch was never awaited (created at app.py:99)"


def test_fd_leak_names_the_opening_stacks_of_the_newest_fds():
    snap = build_state().snapshot()            # 30 samples, one more socket in each
    (f,) = warnings.fd_leak(snap)
    assert f.subject == "fd kind socket" and "from 2 to 31 over the last 30 samples" in f.message
    assert f.evidence[0] == f"fd 49: opened at {LEAK_STACK[0]}"   # user code, not socket.py
    assert len(f.evidence) == 3
    assert warnings.fd_leak(build_state(4).snapshot()) == []     # 24 samples < window
    (f,) = warnings.fd_leak(build_state(4).snapshot(), window=24)
    assert "from 2 to 25" in f.message


def test_fd_leak_not_raised_when_the_count_came_down_or_grew_too_little():
    snap = build_state().snapshot()
    snap.fds.trend["socket"][-10] -= 2
    assert warnings.fd_leak(snap) == []
    snap.fds.trend["socket"] = [7] * 26 + [8, 9, 10, 11]
    assert warnings.fd_leak(snap) == []                           # grew by 4 < 5
    assert len(warnings.fd_leak(snap, min_growth=4)) == 1


def test_check_selects_and_rejects_unknown_lints():
    snap = build_state().snapshot()
    assert _lints(warnings.check(snap, only=["fd-leak"])) == ["fd-leak"]
    assert warnings.check(snap, thresholds={"blocked-loop": {"threshold_ms": 500}},
                          only=["blocked-loop"]) == []
    with pytest.raises(ValueError, match="unknown lint"):
        warnings.check(snap, only=["nope"])


def test_empty_snapshot_has_no_findings():
    assert warnings.check(LiveSnapshot()) == []


def test_wake_kinds_count_self_wakes_and_scheduled_delay_from_the_exact_moments():
    """The probe's step begin says how the step was queued; the state takes the queue time of a
    first step from the task's creation and of a self-wake from its previous step's end (exact),
    and of a woken step from the probe (the end of the previous iteration)."""
    from diag.live.state import LiveState
    from runtime.probefile import WAKE_FIRST, WAKE_SELF, WAKE_WOKEN

    state = LiveState()
    state.apply(ev.TaskCreated(T0, 1, "spinner"))
    state.apply(ev.StepBegin(T0 + 1 * MS, 1, queued_ns=T0 + MS // 2, wake=WAKE_FIRST))
    t = T0 + 2 * MS
    state.apply(ev.StepEnd(t, 1))
    for _ in range(11):                          # each step queued as the one before ended
        state.apply(ev.StepBegin(t + 3 * MS, 1, queued_ns=t + 2 * MS, wake=WAKE_SELF))
        state.apply(ev.StepEnd(t + 4 * MS, 1))
        t += 4 * MS
    state.apply(ev.StepBegin(t + 10 * MS, 1, queued_ns=t + 9 * MS, wake=WAKE_WOKEN))
    state.apply(ev.StepEnd(t + 11 * MS, 1))
    (row,) = state.snapshot().tasks
    assert (row.polls, row.self_wakes, row.wakes) == (13, 11, 1)
    assert row.scheduled_ns == 1 * MS + 11 * 3 * MS + 1 * MS
    (f,) = warnings.self_wakes(state.snapshot())
    assert "woke itself in 11 of 12 steps" in f.message
