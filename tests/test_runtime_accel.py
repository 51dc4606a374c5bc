"""The C accelerator and the pure-Python paths do the same thing: one program that exercises
call_soon, call_at, call_later, get_debug, the cancelled-timer count and the run loop (order,
arguments, contexts, cancellation, errors reported, SystemExit propagated, debug mode, set by
set_debug or directly, a handle subclass with its own _run) runs
in a fresh interpreter each way and must print the same lines. ``make test`` also runs the
runtime's test files with COROSCOPE_PURE_PYTHON=1, so both are tested."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROGRAM = r'''
import asyncio, contextvars, json, sys
import runtime, runtime.accel
from asyncio import events

seen = []
var = contextvars.ContextVar("var", default="unset")

class OwnRun(events.Handle):
    def _run(self):
        seen.append("own _run")

def main():
    loop = runtime.new_event_loop()
    errors = []
    loop.set_exception_handler(lambda l, ctx: errors.append(type(ctx["exception"]).__name__))
    loop.call_soon(seen.append, "first")
    loop.call_soon(lambda *a: seen.append(a), 1, 2, 3)
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in ctx")
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    loop.call_soon(lambda: seen.append(var.get()))
    loop.call_soon(seen.append, "cancelled").cancel()
    loop.call_soon(lambda: 1 / 0)
    loop._ready.append(OwnRun(print, (), loop, None))
    loop.call_later(0.02, seen.append, "later 0.02")
    loop.call_later(0.01, seen.append, "later 0.01")
    loop.call_at(loop.time() + 0.015, seen.append, "at 0.015")
    loop.call_later(0.005, seen.append, "cancelled timer").cancel()
    t = loop.call_later(0.005, lambda: seen.append(var.get()), context=ctx)
    seen.append(["timer", type(t).__name__, t.when() > loop.time() - 1, t._scheduled])
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    for bad in (lambda: loop.call_later(None, print), lambda: loop.call_at(None, print),
                lambda: loop.call_soon(print, bogus=1)):
        try:
            bad()
        except TypeError as exc:
            seen.append("TypeError")
    loop.call_soon(sys.exit, 3)
    loop.call_soon(seen.append, "after exit")
    try:
        loop.run_until_complete(asyncio.sleep(0))
    except SystemExit as exc:
        seen.append(["SystemExit", exc.code])
    loop.set_debug(True)
    h = loop.call_soon(seen.append, "debug")
    seen.append(["debug handle traceback", h._source_traceback is not None])
    loop.run_until_complete(asyncio.sleep(0.001))
    loop.set_debug(False)
    timers = [loop.call_later(100, print) for _ in range(3)]
    timers[0].cancel(); timers[0].cancel(); timers[1].cancel()
    seen.append(["cancelled, counted once each", loop._timer_cancelled_count, loop.get_debug()])
    loop._debug = True  # asyncio's attribute set directly: get_debug and call_soon see it
    seen.append(["debug set directly", loop.get_debug(),
                 loop.call_soon(lambda: None)._source_traceback is not None])
    loop._debug = False
    async def task():
        await asyncio.sleep(0.001)
        return var.get()
    seen.append(loop.run_until_complete(loop.create_task(task())))
    loop.close()
    for bad in (lambda: loop.call_soon(print), lambda: loop.call_later(1, print),
                lambda: loop.call_at(1, print)):
        try:
            bad()
        except RuntimeError as exc:
            seen.append(str(exc))
    print(json.dumps({"compiled": runtime.accel.COMPILED, "seen": seen, "errors": errors}))

main()
'''


def _run(pure: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("COROSCOPE_TRACE", None)
    env.pop("COROSCOPE_PURE_PYTHON", None)
    if pure:
        env["COROSCOPE_PURE_PYTHON"] = "1"
    proc = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_accelerator_is_built_where_the_project_is_installed():
    import runtime.accel
    if not runtime.accel.COMPILED:
        if os.environ.get("CI") == "true" and not os.environ.get("COROSCOPE_PURE_PYTHON"):
            pytest.fail(f"the C accelerator is not in use: {runtime.accel.REASON}")
        pytest.skip(runtime.accel.REASON)
    assert _run(pure=True)["compiled"] is False


def test_both_paths_behave_the_same():
    pure, accelerated = _run(pure=True), _run(pure=False)
    assert pure["seen"][:6] == [["timer", "TimerHandle", True, True],
                                "first", [1, 2, 3], "in ctx", "unset", "own _run"]
    assert pure["seen"][6:10] == ["in ctx", "later 0.01", "at 0.015", "later 0.02"]
    assert pure["errors"] == ["ZeroDivisionError"]
    # SystemExit leaves the loop at once: the next handle runs in the next run, not before
    assert pure["seen"].index(["SystemExit", 3]) < pure["seen"].index("after exit")
    assert pure["seen"].count("Event loop is closed") == 3
    assert ["cancelled, counted once each", 2, False] in pure["seen"]
    assert ["debug set directly", True, True] in pure["seen"]
    assert {k: v for k, v in accelerated.items() if k != "compiled"} == \
        {k: v for k, v in pure.items() if k != "compiled"}


def test_the_traced_iteration_refuses_a_record_size_other_than_the_probe_files():
    """The C traced iteration stores probefile's records word by word: set up for a record of
    another size (a probe format changed without the accelerator), it says so and writes nothing."""
    import runtime.accel
    import runtime.probefile as pf
    if not runtime.accel.COMPILED:
        pytest.skip(runtime.accel.REASON)
    mm = bytearray(1 << 20)
    with pytest.raises(ValueError, match=f"writes {pf.RECORD_SIZE}-byte records, the probe file has 64"):
        runtime.accel.traced_iteration(mm, 64, 0, 16, 0, runtime.accel.sequence_counter(), None, None,
                                       None, (), 1, 0, 0)
    assert not any(mm)


# One small workload, traced, run the C way and the pure-Python way: the probe records must be
# the same, kind by kind and field by field, but for what differs between any two runs (times,
# durations, and the id() of a timer handle, which is compared by order of first appearance).
# Every step waits on one thing at a time, so the iterations (and what each poll returns) are
# the same in every run.
TRACED_PROGRAM = r'''
import asyncio, json, os, socket
import runtime, runtime.accel
from runtime import probefile as pf, tracing
from runtime.requests import request

tracing.enable()

async def main():
    loop = asyncio.get_running_loop()
    seen = []
    loop.call_soon(seen.append, "plain")                  # a callback outside any request
    with request("around a callback"):
        loop.call_soon(seen.append, "in a request")       # its context carries the request
    await asyncio.sleep(0)

    woken = loop.create_future()
    async def worker():
        await asyncio.sleep(0)                            # a self-wake
        await woken                                       # woken by a future
        with request("in a task"):
            await asyncio.sleep(0)
        return "worked"
    task = asyncio.create_task(worker(), name="worker")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    woken.set_result(None)
    seen.append(await task)

    dropped = loop.call_later(0.0005, seen.append, "never")
    dropped.cancel()                                      # dropped from the heap: a cancel record
    fired = loop.create_future()
    loop.call_later(0.001, fired.set_result, "timer")     # a timer that fires
    seen.append(await fired)

    # Sockets becoming readable in one poll: one event inline in the iteration record, then four
    # (three inline, one IO_READY record after), one of them read in a request's context.
    pairs = [socket.socketpair() for _ in range(4)]
    for mine, _ in pairs:
        mine.setblocking(False)
    got = [loop.create_future(), loop.create_future()]
    def readable(sock, tag):
        seen.append([tag, sock.recv(16).decode()])
        loop.remove_reader(sock)
        if len(seen) in (5, 9):
            got[len(seen) // 9].set_result(None)
    with request("reading"):
        loop.add_reader(pairs[0][0], readable, pairs[0][0], "in a request")
    pairs[0][1].send(b"one")
    await got[0]
    for i, (mine, theirs) in enumerate(pairs[1:], 1):
        loop.add_reader(mine, readable, mine, f"socket {i}")
    for mine, theirs in pairs:
        theirs.send(b"many")
    loop.add_reader(pairs[0][0], readable, pairs[0][0], "socket 0")
    await got[1]
    for pair in pairs:
        for sock in pair:
            sock.close()
    return seen

seen = runtime.run(main())
w = tracing.writer()
layout = w.layout
records = []
for seq in range(1, w.records_written + 1):
    status, fields = pf.read_record(w.mm, layout, seq)
    assert status == pf.READ_OK, (seq, status)
    records.append(fields)
counters = pf.read_counters(w.mm, layout)
out = {"compiled": runtime.accel.COMPILED,
       "c_iteration": type(tracing.TRACE.iteration).__name__ == "builtin_function_or_method",
       "seen": seen, "counters": counters, "records": []}
TIMES = {pf.Rec.STEP_BEGIN: "a", pf.Rec.STEP_END: "a", pf.Rec.LOOP_ITERATION: "a",
         pf.Rec.REQUEST_END: "a", pf.Rec.TIMER_ADD: "b", pf.Rec.EXECUTOR_DONE: "b",
         pf.Rec.SLOW_STEP: "a"}
IDENTITIES = {pf.Rec.TIMER_ADD: "a", pf.Rec.TIMER_FIRE: "a", pf.Rec.TIMER_CANCEL: "a",
              pf.Rec.EXECUTOR_SUBMIT: "a", pf.Rec.EXECUTOR_DONE: "a"}
identities = {}
for fields in records:
    record = dict(zip(pf.RECORD_FIELD_NAMES, fields))
    kind = pf.Rec(record["kind"])
    assert record.pop("seq") == record.pop("seq_end")
    del record["ns"]
    if kind in TIMES:
        record[TIMES[kind]] = "time"
    if kind in IDENTITIES:
        record[IDENTITIES[kind]] = identities.setdefault(record[IDENTITIES[kind]], len(identities))
    for name, meaning in pf.RECORD_FIELDS.get(kind, {}).items():
        if meaning.startswith("sid:"):
            record[name] = pf.read_string(w.mm, layout, record[name])
    record["kind"] = kind.name
    out["records"].append(record)
tracing.disable()
print(json.dumps(out))
'''


def _run_traced(pure: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COROSCOPE_TRACE_CORO_ORIGIN="0")
    env.pop("COROSCOPE_TRACE", None)
    env.pop("COROSCOPE_PURE_PYTHON", None)
    if pure:
        env["COROSCOPE_PURE_PYTHON"] = "1"
    proc = subprocess.run([sys.executable, "-c", TRACED_PROGRAM], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_c_traced_iteration_writes_the_records_the_python_one_writes():
    pure, accelerated = _run_traced(pure=True), _run_traced(pure=False)
    assert pure["compiled"] is False and pure["c_iteration"] is False
    if not accelerated["compiled"]:
        pytest.skip(runtime_accel_reason())
    assert accelerated["c_iteration"] is True
    # the workload did what it is there for, in the reference (pure-Python) run
    assert pure["seen"][:5] == ["plain", "in a request", "worked", "timer", ["in a request", "one"]]
    assert sorted(tag for tag, _ in pure["seen"][5:]) == ["socket 0", "socket 1", "socket 2",
                                                           "socket 3"]
    records = pure["records"]
    kinds = [r["kind"] for r in records]
    worker = {r["task"] for r in records if r["kind"] == "TASK_CREATE"
              and r["c"] == "main.<locals>.worker"}
    assert len(worker) == 1
    wakes = [r["b"] for r in records if r["kind"] == "STEP_BEGIN" and r["task"] in worker]
    assert wakes[:3] == [pf_wake("first"), pf_wake("self"), pf_wake("woken")]
    requests = [r["b"] for r in records if r["kind"] == "REQUEST_BEGIN"]
    assert requests == ["around a callback", "in a task", "reading"]
    assert kinds.count("REQUEST_END") == 3 and kinds.count("TASK_DONE") >= 2
    assert {"TIMER_ADD", "TIMER_FIRE", "TIMER_CANCEL", "IO_REGISTER", "IO_UNREGISTER",
            "IO_READY", "FD_OPEN", "FD_CLOSE"} <= set(kinds)
    # the poll that returned four events: three inline, the fourth in the record after
    many = [i for i, r in enumerate(records) if r["kind"] == "LOOP_ITERATION" and r["b"] == 4]
    assert len(many) == 1 and all(records[many[0]][f] for f in "def")
    assert records[many[0] + 1]["kind"] == "IO_READY"
    # the C run: the same records, in the same order, field by field
    assert [r["kind"] for r in accelerated["records"]] == kinds
    for mine, theirs in zip(accelerated["records"], records):
        assert mine == theirs
    assert accelerated["counters"] == pure["counters"]
    assert accelerated["seen"] == pure["seen"]


def pf_wake(name: str) -> int:
    import runtime.probefile as pf
    return pf.WAKES.index(name)


def runtime_accel_reason() -> str:
    import runtime.accel
    return runtime.accel.REASON


SEQUENCE_PROGRAM = r'''
import json
import runtime.accel as accel
from runtime import probefile as pf
seq = accel.sequence_counter(5)
taken = [next(seq), next(seq), seq.__next__()]
after = pf.next_of(seq)
w = pf.ProbeWriter.create(path=__import__("sys").argv[1])
w.emit(pf.Rec.TIMER_FIRE, pf.NO_THREAD, 0, 0, 0, 1, 2)
w.emit(pf.Rec.TIMER_FIRE, pf.NO_THREAD, 0, 0, 0, 3, 4)
written = w.records_written
w.close()
print(json.dumps({"kind": type(seq).__name__, "taken": taken, "next": after, "written": written}))
'''


@pytest.mark.parametrize("pure", [True, False], ids=["pure", "accelerated"])
def test_the_sequence_counter_of_either_path(pure, tmp_path):
    """accel.sequence_counter is itertools.count or the C Sequence: the same numbers, the same
    next_of (which ProbeWriter.records_written reads)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("COROSCOPE_TRACE", None)
    env.pop("COROSCOPE_PURE_PYTHON", None)
    if pure:
        env["COROSCOPE_PURE_PYTHON"] = "1"
    proc = subprocess.run([sys.executable, "-c", SEQUENCE_PROGRAM, str(tmp_path / "probe")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    import runtime.accel
    if not pure and not runtime.accel.COMPILED:
        pytest.skip(runtime.accel.REASON)
    assert out["kind"] == ("count" if pure else "Sequence")
    assert out["taken"] == [5, 6, 7] and out["next"] == 8
    assert out["written"] == 2
