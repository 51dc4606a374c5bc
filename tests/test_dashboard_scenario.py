"""A fixed, hand-built event stream (the "scenario") and the LiveState figures it must give.

Other dashboard tests import ``build_state``/``write_recording`` from here: the snapshot tests
draw the recording this writes, so their screens depend on nothing but this file.
"""
from __future__ import annotations

from diag.live import events as ev
from diag.live.recording import Recorder
from diag.live.samplers import hot_paths_from
from diag.live.state import LiveState
from diag.model.live import TargetInfo

S = 1_000_000_000
MS = 1_000_000
T0 = 5_000 * S          # the scenario's "boot" on the target's monotonic clock
BLOCK_STACK = ("examples/dashboard_target.py:40 in main", "examples/dashboard_target.py:61 in blocker",
               "examples/dashboard_target.py:63 in crunch")
LEAK_STACK = ("examples/dashboard_target.py:70 in leaker", "/usr/lib/python3.11/socket.py:232 in __init__")


def second_events(k: int) -> list:
    """Events of second k (0-based) of the scenario."""
    base = T0 + k * S
    out: list = []
    if k == 0:
        out += [
            ev.TaskCreated(base, 1, "main", 0, "main", "app.py:10"),
            ev.TaskCreated(base + 1 * MS, 2, "worker-1", 1, "worker", "app.py:20"),
            ev.TaskCreated(base + 1 * MS, 3, "worker-2", 1, "worker", "app.py:20"),
            ev.TaskCreated(base + 2 * MS, 4, "spinner", 1, "spin", "app.py:30"),
            ev.TaskCreated(base + 2 * MS, 5, "stuck", 1, "wait_forever", "app.py:40"),
            ev.TaskCreated(base + 3 * MS, 6, "blocker", 1, "blocker", "app.py:50"),
            ev.TaskCreated(base + 3 * MS, 7, "short", 1, "short", "app.py:60"),
            ev.StepBegin(base + 4 * MS, 5, queued_ns=base + 3 * MS),
            ev.StepEnd(base + 5 * MS, 5, "Future pending", ("wait_forever", "Future pending")),
            ev.StepBegin(base + 6 * MS, 7), ev.StepEnd(base + 7 * MS, 7, "sleep(0.1)"),
            ev.StepBegin(base + 100 * MS, 7), ev.StepEnd(base + 101 * MS, 7),
            ev.TaskDone(base + 101 * MS, 7, "result"),
        ]
    for i in range(4):        # the spinner yields to itself four times a second
        t = base + (200 + i * 100) * MS
        out += [ev.StepBegin(t, 4, queued_ns=t - 2 * MS), ev.StepEnd(t + 50_000, 4, "<yield>")]
    for w in (2, 3):          # workers: one 2 ms step every second, awaiting a socket
        t = base + (10 + w) * MS
        out += [ev.StepBegin(t, w), ev.StepEnd(t + 2 * MS, w, "sock_recv(fd 9)")]
    for r in range(1, 11):    # 10 requests a second, latency r ms
        rid = k * 100 + r
        t = base + r * 50 * MS
        out += [ev.RequestBegin(t, rid, "GET /"), ev.RequestEnd(t + r * MS, rid)]
    for i in range(100):      # 100 loop iterations a second, 4 ms in poll each
        out.append(ev.LoopIteration(base + i * 10 * MS + 5 * MS, 4 * MS, 1, 3))
    out.append(ev.TimerLate(base + 500 * MS, (k + 1) * MS))
    if k == 2:
        out += [ev.StepBegin(base + 600 * MS, 6),
                ev.SlowStepSeen(base + 850 * MS, 6, 250 * MS, BLOCK_STACK),
                ev.StepEnd(base + 850 * MS, 6, "sleep(1)")]
    return out


SAMPLES_PER_S = 6     # fd samples (dashboard refreshes) per second of the scenario


def leak_event(n: int) -> ev.FdOpened:
    """The n-th leaked socket (0-based), opened just before fd sample n."""
    return ev.FdOpened(T0 + n * S // SAMPLES_PER_S, 20 + n, "socket", 6, LEAK_STACK)


def fd_sample(n: int) -> ev.FdSample:
    """fd sample n (0-based): the fixed fds and the n + 1 leaked sockets."""
    fds = {0: ("device", "/dev/null"), 1: ("pipe", "pipe:[1]"), 2: ("pipe", "pipe:[2]"),
           3: ("epoll", "anon_inode:[eventpoll]"), 4: ("eventfd", "anon_inode:[eventfd]"),
           9: ("socket", "socket:[900]")}
    for j in range(n + 1):
        fds[20 + j] = ("socket", f"socket:[{1000 + j}]")
    by_kind: dict[str, int] = {}
    for kind, _ in fds.values():
        by_kind[kind] = by_kind.get(kind, 0) + 1
    return ev.FdSample(by_kind, fds)


SECONDS = 5


HOT_STACKS = {
    ("main (app.py:10)", "[event loop]"): 60,
    ("main (app.py:10)", "[event loop]", "handle (app.py:70)", "render (app.py:80)"): 25,
    ("main (app.py:10)", "[event loop]", "handle (app.py:70)", "json.dumps (json/__init__.py:231)"): 10,
    ("main (app.py:10)", "[event loop]", "blocker (app.py:50)", "crunch (app.py:63)"): 5,
}


def build_state(seconds: int = SECONDS, on_second=None) -> LiveState:
    state = LiveState(TargetInfo(4242, "python examples/dashboard_target.py", "runtime"),
                      source="probe file of pid 4242")
    state.set_hot_paths(hot_paths_from(HOT_STACKS, "in-process sampler (fixed)"))
    for k in range(seconds):
        state.apply_all(second_events(k))
        for n in range(k * SAMPLES_PER_S, (k + 1) * SAMPLES_PER_S):
            state.apply(leak_event(n))
            state.add_fd_sample(fd_sample(n), "/proc/4242/fd")
        if on_second:
            on_second(k, state)
    return state


def write_recording(path) -> int:
    recorder = Recorder(path, pid=4242, command="python examples/dashboard_target.py")

    def add(k, state):
        recorder.add(state.snapshot(T0 + (k + 1) * S - 1, wall_time=1_700_000_000.0 + k))

    build_state(on_second=add)
    recorder.close()
    return recorder.count


# ------------------------------------------------------------------------------------- tests


def _task(snap, task_id):
    return next(t for t in snap.tasks if t.id == task_id)


def test_tasks_fold_polls_busy_and_histogram():
    snap = build_state().snapshot(T0 + SECONDS * S)
    worker = _task(snap, 2)
    assert worker.polls == SECONDS
    assert worker.busy_ns == SECONDS * 2 * MS
    assert worker.step_histogram[2 + 1] == SECONDS     # 2 ms lies in "<10ms"
    assert worker.state == "idle" and worker.awaiting == "sock_recv(fd 9)"
    assert worker.wakes == SECONDS and worker.self_wakes == 0
    spinner = _task(snap, 4)
    assert spinner.self_wakes == 4 * SECONDS and spinner.state == "scheduled"
    assert spinner.scheduled_ns == 4 * SECONDS * 2 * MS
    assert _task(snap, 7).state == "done" and _task(snap, 7).outcome == "result"
    assert _task(snap, 7).age_ns == 98 * MS
    assert [t.id for t in snap.tasks if t.state != "done"] == [1, 2, 3, 4, 5, 6]


def test_running_step_is_seen_before_it_ends():
    state = build_state(2)
    state.apply(ev.StepBegin(T0 + 2 * S, 6))
    snap = state.snapshot(T0 + 2 * S + 1500 * MS)
    blocker = _task(snap, 6)
    assert blocker.state == "running" and blocker.running_for_ns == 1500 * MS
    assert blocker.busy_ns == 1500 * MS


def test_a_task_named_after_creation_takes_its_name():
    """create_task(coro, name=...) names the task after the create record: the TASK_NAME record."""
    state = build_state(1)
    before = _task(state.snapshot(T0 + S), 2).name
    state.apply(ev.TaskRenamed(T0 + S, 2, "db-poller"))
    snap = state.snapshot(T0 + S)
    assert before != "db-poller" and _task(snap, 2).name == "db-poller"
    state.apply(ev.TaskRenamed(T0 + S, 999, "nobody"))     # an unknown task is not invented
    assert 999 not in {t.id for t in state.snapshot(T0 + S).tasks}


def test_requests_and_loop_series():
    snap = build_state().snapshot(T0 + SECONDS * S - 1)
    r = snap.requests
    assert r.total == 10 * SECONDS and r.in_flight == 0
    assert r.rate.values == [10.0] * SECONDS and r.rate.start_s == T0 // S
    assert r.p50_ms.values == [5.0] * SECONDS          # latencies 1..10 ms: nearest rank
    assert r.p99_ms.values == [10.0] * SECONDS
    assert r.max_ms.values == [10.0] * SECONDS
    assert r.window_max_ms == 10.0
    lp = snap.loop
    assert lp.iterations == 100 * SECONDS
    assert lp.iterations_per_s.values == [100.0] * SECONDS
    assert lp.poll_blocked_ms_per_s.values == [400.0] * SECONDS
    assert lp.ready_mean.values == [3.0] * SECONDS
    # second k: four 2 ms queue delays and a timer (k + 1) ms late
    assert lp.sched_lag_p99_ms.values == [2.0, 2.0, 3.0, 4.0, 5.0]


def test_lost_records_are_counted_not_applied():
    state = build_state(1)
    before = state.records
    state.apply(ev.RecordsLost(17))
    snap = state.snapshot()
    assert snap.lost_records == 17 and snap.records == before


def test_fd_rows_join_proc_sample_with_opening_stacks():
    snap = build_state().snapshot()
    samples = SECONDS * SAMPLES_PER_S
    assert snap.fds.by_kind["socket"] == 1 + samples
    assert snap.fds.trend["socket"] == list(range(2, 2 + samples))
    assert snap.fds.trend["pipe"] == [2] * samples
    leaked = {r.fd: r for r in snap.fds.open if r.fd >= 20}
    assert sorted(leaked) == list(range(20, 20 + samples))
    last = 20 + samples - 1
    assert leaked[last].stack == list(LEAK_STACK) and leaked[last].task_id == 6
    assert next(r for r in snap.fds.open if r.fd == 9).stack == []


def test_fd_closed_forgets_origin():
    state = build_state(1)
    state.apply(ev.FdClosed(T0 + 2 * S, 20))
    assert 20 not in state.fd_origin


def test_done_tasks_are_bounded():
    from diag.live.state import KEEP_DONE
    state = LiveState()
    for i in range(1, KEEP_DONE + 50):
        state.apply(ev.TaskCreated(i, i, f"t{i}"))
        state.apply(ev.TaskDone(i + 1, i))
    snap = state.snapshot()
    assert len(snap.tasks) == KEEP_DONE
    assert snap.tasks[0].id == KEEP_DONE + 49         # newest finished first


def test_hot_paths_count_self_and_total_samples():
    hot = build_state(1).snapshot().hot
    assert hot.samples == 100
    top = {h.function: (h.self_samples, h.total_samples) for h in hot.top}
    assert top["[event loop]"] == (60, 100)
    assert top["render (app.py:80)"] == (25, 25)
    assert top["handle (app.py:70)"] == (0, 35)
    assert hot.top[0].function == "[event loop]"
    assert hot.folded["main (app.py:10);[event loop];blocker (app.py:50);crunch (app.py:63)"] == 5
