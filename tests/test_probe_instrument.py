"""Stock asyncio and uvloop, instrumented through diag.instrument: task create / step / done
records (and, on asyncio, io and loop iterations) read back by the same reader, from outside."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from diag.probe import ProbeReader

PY = sys.executable

TARGET = textwrap.dedent("""
    import asyncio, json, os, sys
    from diag import instrument
    instrument.install_from_env()         # what the bootstrap's sitecustomize does
    from runtime import request, tracing

    async def worker(n):
        for _ in range(n):
            await asyncio.sleep(0)
        return n

    async def failing():
        raise RuntimeError("no")

    async def forever():
        await asyncio.sleep(3600)

    async def main():
        with request("job"):
            assert await asyncio.create_task(worker(3), name="worker") == 3
        f = asyncio.create_task(failing(), name="failing")
        await asyncio.wait([f])
        f.exception()
        c = asyncio.create_task(forever(), name="forever")
        await asyncio.sleep(0)
        c.cancel()
        await asyncio.wait([c])
        return type(asyncio.get_running_loop()).__module__

    if os.environ["COROSCOPE_LOOP"] == "uvloop":
        import uvloop
        loop_module = uvloop.run(main())
    else:
        loop_module = asyncio.run(main())
    print(json.dumps({"pid": os.getpid(), "loop": loop_module, "path": tracing.writer().path}), flush=True)
    sys.stdin.read()
""")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_task_records_on_a_stock_loop(loop):
    env = {**os.environ, "COROSCOPE_TRACE": "1", "COROSCOPE_LOOP": loop}
    proc = subprocess.Popen([PY, "-c", TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line, "target died"
        facts = json.loads(line)
        assert facts["loop"].startswith("uvloop" if loop == "uvloop" else "asyncio")
        with ProbeReader.attach(facts["pid"]) as reader:
            records = reader.poll()
            counters = reader.counters()
            assert reader.lost == 0
            assert reader.header.loop_kind == loop
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)
    assert not os.path.exists(facts["path"])

    names = {r.task: r.fields["name"] for r in records if r.kind == "task_name"}
    created = {r.task: r for r in records if r.kind == "task_create"}
    tasks = {names.get(t, c.fields["name"]): t for t, c in created.items()}
    assert {"worker", "failing", "forever"} <= tasks.keys()
    worker = created[tasks["worker"]]
    assert worker.fields["coro"] == "worker" and worker.fields["created_at"].endswith(":20")
    job = next(r for r in records if r.kind == "request_begin" and r.fields["name"] == "job")
    assert worker.request == job.request

    steps = [r for r in records if r.kind == "step_end" and r.task == tasks["worker"]]
    assert len(steps) == 4                                    # 3 sleeps(0) + the return
    assert all(r.request == job.request for r in steps)
    begins = [r for r in records if r.kind == "step_begin" and r.task == tasks["worker"]]
    assert len(begins) == 4
    # how each step was queued, told by what the one before yielded: three sleep(0)s wake it
    # itself; "forever" is woken by its cancellation (the timer future it awaited)
    assert [r.fields["wake"] for r in begins] == ["first", "self", "self", "self"]
    forever = [r.fields["wake"] for r in records if r.kind == "step_begin" and r.task == tasks["forever"]]
    assert forever == ["first", "woken"]
    # by when a step was queued is the end of the iteration before: known from the loop's
    # iterations, hooked on asyncio only (0 before the first iteration ended)
    first_iteration = min((r.seq for r in records if r.kind == "loop_iteration"), default=None)
    ready_for = [r.fields["ready_for_ns"] for r in records if r.kind == "step_begin"
                 and (first_iteration is None or r.seq > first_iteration)]
    assert ready_for and (all(ready_for) if loop == "asyncio" else not any(ready_for))

    done = {r.task: r.fields for r in records if r.kind == "task_done"}
    assert done[tasks["worker"]]["outcome"] == "result"
    assert done[tasks["failing"]] == {"outcome": "exception", "exception": "RuntimeError"}
    assert done[tasks["forever"]]["outcome"] == "cancelled"
    assert set(done) == set(created)
    assert counters["tasks_created"] == len(created) and counters["tasks_alive"] == 0
    assert counters["steps"] == sum(1 for r in records if r.kind == "step_end")

    kinds = {r.kind for r in records}
    if loop == "asyncio":          # the pure-Python loop also gets io, timer and iteration hooks
        assert {"loop_iteration", "timer_add", "timer_cancel", "io_unregister"} <= kinds
    else:                          # uvloop: the task factory only
        assert kinds <= {"task_create", "task_name", "step_begin", "step_end", "task_done",
                         "slow_step", "request_begin", "request_end", "coro_never_awaited"}


EAGER_TARGET = textwrap.dedent("""
    import asyncio, os
    from diag import probe

    async def quick():
        return 1

    async def slow():
        await asyncio.sleep(0.001)
        return 2

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)    # after the loop was instrumented
        quick_task = asyncio.create_task(quick())
        assert quick_task.done()                              # finished inside create_task
        await asyncio.create_task(slow())
        await asyncio.sleep(0.01)
        assert loop.get_task_factory() is asyncio.eager_task_factory
        with probe.attach(os.getpid()) as reader:
            by_task = {}
            for rec in reader.poll():
                if rec.kind in ("task_create", "step_begin", "step_end", "task_done"):
                    by_task.setdefault(rec.task, []).append(
                        rec.kind + (":" + rec.fields["wake"] if rec.kind == "step_begin" else ""))
        for task, kinds in sorted(by_task.items()):
            print(task, " ".join(kinds))

    asyncio.run(main())
""")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are CPython 3.12's")
def test_an_eager_task_that_finishes_inside_create_task_is_created_stepped_and_done(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COROSCOPE_")}
    env["COROSCOPE_TRACE"] = "1"
    out = subprocess.run([PY, "-c", EAGER_TARGET], env=env, capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    # main, then quick (one eager step, done before create_task returned), then slow (an eager
    # first step that suspends, and a second step on the loop)
    assert lines["2"] == "task_create step_begin:first step_end task_done", lines
    assert lines["3"] == "task_create step_begin:first step_end step_begin:woken step_end task_done", lines
