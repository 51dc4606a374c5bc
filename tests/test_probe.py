"""The probe file read from another process: every tracepoint kind with its fields, the ring
under a writer at full speed, stale files, removal at exit, and the ``coroscope probe`` command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

from diag.probe import ProbeReader, StaleProbeFile
from runtime import probefile as pf

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_trace_all():
    proc = subprocess.Popen([PY, "-m", "examples.trace_all"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line, "examples.trace_all died before printing its facts"
    return proc, json.loads(line)


def finish(proc) -> int:
    proc.stdin.close()
    return proc.wait(timeout=20)


@pytest.fixture(scope="module")
def trace_all():
    """One run of examples/trace_all.py, read back from this (another) process."""
    proc, facts = start_trace_all()
    try:
        reader = ProbeReader.attach(facts["pid"])
        records = reader.poll()
        snap = reader.snapshot(records)
        lost = reader.lost
        reader.close()
        yield facts, records, snap, lost
    finally:
        finish(proc)
    assert facts["probe_path"] == f"/proc/{facts['pid']}/fd/{facts['probe_path'].rsplit('/', 1)[1]}"


def test_every_tracepoint_kind_is_read_back(trace_all):
    facts, records, snap, lost = trace_all
    assert lost == 0
    kinds = Counter(r.kind for r in records)
    assert set(kinds) == {k.name.lower() for k in pf.Rec}
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert snap.counters["records_written"] == len(records)
    assert snap.pid == facts["pid"] and snap.loop_kind == "runtime"


def test_task_records_have_the_right_fields(trace_all):
    facts, records, snap, _ = trace_all
    created = {r.task: r for r in records if r.kind == "task_create"}
    names = {r.task: r.fields["name"] for r in records if r.kind == "task_name"}
    by_name = {names.get(t, c.fields["name"]): c for t, c in created.items()}
    main = next(c for c in created.values() if c.fields["coro"] == "main")
    request = next(r for r in records if r.kind == "request_begin" and r.fields["name"] == "trace-all")

    returns = by_name["returns"]
    assert returns.fields["coro"] == "returns"
    assert returns.fields["parent_task"] == main.task
    assert returns.request == request.request           # created inside the request
    assert returns.fields["created_at"].endswith("trace_all.py:59")
    assert "trace_all.py" in returns.fields["coro_defined_at"]

    done = {r.task: r.fields for r in records if r.kind == "task_done"}
    assert done[by_name["returns"].task]["outcome"] == "result"
    assert done[by_name["raises"].task] == {"outcome": "exception", "exception": "KeyError"}
    assert done[by_name["cancelled"].task]["outcome"] == "cancelled"
    assert done[by_name["renamed"].task]["outcome"] == "result"     # set_name() before its step
    assert set(done) == set(created)                     # every task finished
    assert snap.counters["tasks_created"] == len(created)
    assert snap.counters["tasks_alive"] == 0

    # Steps: begin/end alternate per thread, same task and request; the count is the counter's.
    open_step = None
    for r in records:
        if r.kind == "step_begin":
            assert open_step is None
            open_step = r
        elif r.kind == "step_end":
            assert open_step is not None and (open_step.task, open_step.request) == (r.task, r.request)
            assert r.fields["duration_ns"] >= 0
            open_step = None
    assert kinds_count(records, "step_end") == snap.counters["steps"]
    steps_of_returns = [r for r in records if r.kind == "step_end" and r.task == returns.task]
    assert len(steps_of_returns) == 2 and all(r.request == request.request for r in steps_of_returns)

    # Other steps may be slow too on a busy machine; the deliberately slow one must be there.
    slow = [r for r in records if r.kind == "slow_step"]
    assert len(slow) == snap.counters["slow_steps"]
    assert all(r.fields["duration_ns"] >= facts["slow_step_ms"] * 1_000_000 for r in slow)
    mine = [r for r in slow if r.task == by_name["slow"].task]
    assert len(mine) == 1 and "task slow" in mine[0].fields["stack"]


def kinds_count(records, kind):
    return sum(1 for r in records if r.kind == kind)


def ready_events(records) -> list[tuple[int, int, int]]:
    """(ns, fd, events) of every ready event: those a loop iteration record carries itself and
    the io_ready records that follow it when a poll returned more."""
    events = []
    for r in records:
        if r.kind == "loop_iteration":
            events += [(r.ns, fd, ev) for fd, ev in r.fields["ready"]]
        elif r.kind == "io_ready":
            events.append((r.ns, r.fields["fd"], r.fields["events"]))
    return events


def test_io_timer_fd_request_executor_records(trace_all):
    facts, records, snap, _ = trace_all
    server_fd = facts["server_fd"]
    assert any(r.kind == "io_register" and r.fields == {"events": 1, "fd": server_fd} for r in records)
    ready = ready_events(records)
    assert any(fd == server_fd and ev == 1 for _, fd, ev in ready)
    assert any(r.kind == "io_unregister" and r.fields["fd"] == server_fd for r in records)
    assert len(ready) == snap.counters["io_ready"]
    # five fds ready in one poll: three inside its iteration record, two io_ready records after
    # it, all stamped with the poll's end
    burst = [r for r in records if r.kind == "loop_iteration" and r.fields["nevents"] == 5]
    assert len(burst) == 1 and len(burst[0].fields["ready"]) == 3
    after = [r for r in records if r.seq in (burst[0].seq + 1, burst[0].seq + 2)]
    assert [r.kind for r in after] == ["io_ready", "io_ready"] and all(r.ns == burst[0].ns for r in after)
    assert sorted([fd for fd, _ in burst[0].fields["ready"]] + [r.fields["fd"] for r in after]) == facts["burst_fds"]

    added = {r.fields["timer"]: r for r in records if r.kind == "timer_add"}
    fired = [r.fields["timer"] for r in records if r.kind == "timer_fire"]
    cancelled = [r.fields["timer"] for r in records if r.kind == "timer_cancel"]
    assert fired and all(t in added for t in fired + cancelled)
    assert any(added[t].fields["callback"] == "print" for t in cancelled)

    opened = {(r.fields["fd"], r.fields["generation"]): r for r in records if r.kind == "fd_open"}
    closed = {(r.fields["fd"], r.fields["generation"]): r for r in records if r.kind == "fd_close"}
    assert opened.keys() == closed.keys()                # the loop closed all it opened
    kinds = {r.fields["fd_kind"] for r in opened.values()}
    assert {"epoll", "eventfd", "socket", "pipe"} <= kinds
    server_open = [r for (fd, _), r in opened.items() if fd == server_fd and r.fields["fd_kind"] == "socket"]
    assert server_open and "trace_all.py:54 in main" in server_open[0].fields["stack"]
    pipe_open = [r for (fd, _), r in opened.items() if fd == facts["pipe_fd"] and r.fields["fd_kind"] == "pipe"]
    assert pipe_open and all(closed[(facts["pipe_fd"], r.fields["generation"])].fields["fd_kind"] == "pipe"
                             for r in pipe_open)
    assert all(v == 0 for k, v in snap.counters.items() if k.startswith("fds_open_"))

    begins = {r.request: r for r in records if r.kind == "request_begin"}
    ends = {r.request: r for r in records if r.kind == "request_end"}
    assert begins.keys() == ends.keys()
    names = Counter(r.fields["name"] for r in begins.values())
    assert names == {"trace-all": 1, "echo": facts["echo_requests"]}
    assert snap.counters["requests_done"] == len(ends) and snap.counters["requests_active"] == 0
    assert all(e.fields["failed"] == 0 and e.fields["duration_ns"] > 0 for e in ends.values())

    submit = [r for r in records if r.kind == "executor_submit"]
    done = [r for r in records if r.kind == "executor_done"]
    assert len(submit) == len(done) == 1 and submit[0].fields["future"] == done[0].fields["future"]

    iterations = [r for r in records if r.kind == "loop_iteration"]
    assert len(iterations) == snap.counters["loop_iterations"]
    assert sum(r.fields["nevents"] for r in iterations) == snap.counters["io_ready"]


WRITER = textwrap.dedent("""
    import sys
    from runtime import probefile as pf
    path, n = sys.argv[1], int(sys.argv[2])
    layout = pf.Layout.default(ring_records=256, strings_size=4096, fd_entries=16)
    w = pf.ProbeWriter.create(path=path, layout=layout)
    print("ready", flush=True)
    sys.stdin.readline()
    emit = w.emit
    for i in range(1, n + 1):      # the payload is a function of the sequence number
        emit(1, 0, i & 0xFFFF, i, 3 * i, 17 * i, -i, 7 * i, i ^ 0x5555, 11 * i, i + 1, 13 * i)
    print("done", w.records_written, flush=True)
    sys.stdin.readline()
""")


def test_ring_under_a_full_speed_writer_is_in_order_or_counted_lost(tmp_path):
    n = 200_000
    path = str(tmp_path / "ring.probe")
    proc = subprocess.Popen([PY, "-c", WRITER, path, str(n)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        reader = ProbeReader.open_file(path)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        got, polls = [], 0
        os.set_blocking(proc.stdout.fileno(), False)
        while True:
            batch = reader.poll_raw(limit=500)
            got.extend(batch)
            polls += 1
            if polls % 7 == 0:
                time.sleep(0.0005)            # fall behind now and then: the writer laps us
            if not batch and proc.stdout.readline().startswith("done"):
                got.extend(reader.poll_raw())
                break
            assert batch or proc.poll() is None, "the writer died"
        seqs = [r[0] for r in got]
        assert all(b > a for a, b in zip(seqs, seqs[1:])), "records out of order"
        for r in got:                           # no torn record: every field agrees with seq
            i = r[0]
            assert r[1:] == (1, 0, i & 0xFFFF, 17 * i, i, 3 * i, -i, 7 * i, i ^ 0x5555, 11 * i, i + 1,
                             13 * i, i), f"torn record {r}"
        print(f"ring: {len(got)} read + {reader.lost} lost of {n}")
        assert len(got) + reader.lost == n      # exactly counted
        assert reader.lost > 0 and len(got) > 256
        reader.close()
    finally:
        proc.kill()
        proc.wait()


def _holder(code: str) -> subprocess.Popen:
    """A process that runs ``code``, says "ready" and waits for its stdin to close."""
    proc = subprocess.Popen([PY, "-c", textwrap.dedent(code) + "\nprint('ready', flush=True)\n"
                             "import sys; sys.stdin.read()\n"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_region_naming_another_process_is_refused_and_legacy_files_are_removed():
    # a region whose header names another pid (what a forked child would see of its parent's)
    proc = _holder("from runtime import probefile as pf\nw = pf.ProbeWriter.create(pid=1)")
    try:
        with pytest.raises(StaleProbeFile, match="names another process"):
            ProbeReader.attach(proc.pid)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)

    # named files the versions before the memfd left in /dev/shm: a dead pid's go, a live one's stay
    dead = subprocess.Popen(["true"])
    dead.wait()
    sleeper = subprocess.Popen(["sleep", "30"])
    left = [f"{pf.LEGACY_DIR}/coroscope-{dead.pid}.probe", f"{pf.LEGACY_DIR}/coroscope-{sleeper.pid}.probe"]
    try:
        for path in left:
            with open(path, "wb") as f:
                f.write(b"CSPROBE1" + b"\0" * 8192)
        from diag.probe import remove_stale_files
        removed = remove_stale_files()           # (other processes' stale files go too)
        assert left[0] in removed and left[1] not in removed
        assert not os.path.exists(left[0]) and os.path.exists(left[1])
    finally:
        for path in left:
            if os.path.exists(path):
                os.unlink(path)
        sleeper.kill()
        sleeper.wait()


def test_the_region_is_a_private_memfd_and_nothing_is_named():
    before = set(os.listdir(pf.LEGACY_DIR))
    proc = _holder("from runtime import tracing\ntracing.enable()")
    try:
        paths = pf.region_paths(proc.pid)
        assert len(paths) == 1 and os.readlink(paths[0]) == f"{pf.MEMFD_LINK} (deleted)"
        assert os.stat(paths[0]).st_mode & 0o777 == 0o600
        with ProbeReader.attach(proc.pid) as reader:
            assert reader.header.pid == proc.pid and reader.path == paths[0]
        assert not {n for n in set(os.listdir(pf.LEGACY_DIR)) - before if str(proc.pid) in n}
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0


def test_probe_command_prints_counters_and_records():
    proc, facts = start_trace_all()
    try:
        cmd = [PY, "-m", "diag.cli", "probe", str(facts["pid"])]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "requests done 4 (active 0)" in out.stdout
        assert "name=trace-all" in out.stdout and "slow_step" in out.stdout
        assert out.stdout.rstrip().endswith("records lost (overwritten before read): 0")
        js = subprocess.run(cmd + ["--json", "--kind", "request_end"], capture_output=True,
                            text=True, timeout=30)
        snap = json.loads(js.stdout)
        assert len(snap["records"]) == 4 and {r["kind"] for r in snap["records"]} == {"request_end"}
        assert snap["counters"]["requests_done"] == 4
    finally:
        finish(proc)


def test_probe_command_bad_input_is_one_line(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        cases = {
            str(dead.pid): f"no process with pid {dead.pid}",
            str(sleeper.pid): "publishes no probe region",
        }
        for pid, message in cases.items():
            out = subprocess.run([PY, "-m", "diag.cli", "probe", pid], capture_output=True, text=True)
            assert out.returncode == 2
            assert out.stderr.strip().splitlines() == [f"coroscope: error: {out.stderr.split('error: ')[1].strip()}"]
            assert message in out.stderr
        corrupt = _holder("import os, mmap\nfd = os.memfd_create('coroscope-probe')\n"
                          "os.write(fd, bytes(8192))\nmm = mmap.mmap(fd, 8192)")
        try:
            out = subprocess.run([PY, "-m", "diag.cli", "probe", str(corrupt.pid)],
                                 capture_output=True, text=True)
        finally:
            corrupt.stdin.close()
            corrupt.wait(timeout=10)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
        assert "bad magic" in out.stderr
    finally:
        sleeper.kill()
        sleeper.wait()


def test_step_begin_says_how_the_step_was_queued(trace_all):
    """First step, woken by the future it awaited (a timer), or queued by itself (a bare
    yield: asyncio.sleep(0)), told by the handle's callback; ready_for_ns counts from the end
    of the iteration before, so it is at most the time since the task's previous step ended."""
    facts, records, snap, _ = trace_all
    created = {r.task: r for r in records if r.kind == "task_create"}
    main = next(t for t, c in created.items() if c.fields["coro"] == "main")
    begins: dict[int, list] = {}
    for r in records:
        if r.kind == "step_begin":
            begins.setdefault(r.task, []).append(r)
    assert set(begins) == set(created)
    assert all(b[0].fields["wake"] == "first" for b in begins.values())
    assert all(r.fields["wake"] in ("self", "woken") for b in begins.values() for r in b[1:])
    # returns(): first step, then woken by its sleep's timer
    returns = next(t for t, c in created.items() if c.fields["coro"] == "returns" and c.fields["created_at"])
    assert [r.fields["wake"] for r in begins[returns]] == ["first", "woken"]
    # main awaits asyncio.sleep(0) three times, and loop.create_server once more (asyncio skips
    # an iteration there with sleep(0)): four self-wakes, the rest woken
    assert sum(r.fields["wake"] == "self" for r in begins[main]) == 4
    ends = {r.task: [] for r in records if r.kind == "step_end"}
    for r in records:
        if r.kind == "step_end":
            ends[r.task].append(r)
    for task, steps in begins.items():
        for i, r in enumerate(steps[1:], start=1):
            assert 0 < r.fields["ready_for_ns"] <= r.ns - ends[task][i - 1].ns


def test_a_coroutine_never_awaited_is_recorded_with_where_it_was_created(trace_all):
    facts, records, snap, _ = trace_all
    (rec,) = [r for r in records if r.kind == "coro_never_awaited"]
    assert rec.fields["coro"] == "returns"
    assert rec.fields["created_at"].endswith(f"examples/trace_all.py:{facts['never_awaited_line']}")
    from examples import trace_all as example
    defined = example.returns.__code__.co_firstlineno
    assert rec.fields["defined_at"].endswith(f"examples/trace_all.py:{defined}")
