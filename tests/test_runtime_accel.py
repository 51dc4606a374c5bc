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
        runtime.accel.traced_iteration(mm, 64, 0, 16, 0, None, None, None, None, (), 1, 0, 0)
    assert not any(mm)
