"""The runtime's callback fast paths behave as asyncio's: handles, errors, debug mode, timers.

call_soon, call_at and create_task are written out in ``runtime.loop`` (not wrapped), handles are
built field by field outside debug mode and ``_run_once`` runs them without ``Handle._run``. Each
test runs the same thing on the runtime and on stock asyncio and compares what user code sees.
"""
from __future__ import annotations

import asyncio
import socket
import sys

import pytest

import runtime
from runtime import asyncio_versions, loop as runtime_loop

LOOPS = {"runtime": runtime.new_event_loop, "asyncio": asyncio.SelectorEventLoop}


@pytest.fixture(params=sorted(LOOPS))
def any_loop(request):
    loop = LOOPS[request.param]()
    yield loop
    loop.close()


def _fields(handle) -> dict:
    names = [n for cls in type(handle).__mro__ for n in getattr(cls, "__slots__", ())
             if n != "__weakref__"]
    return {n: getattr(handle, n) for n in names}


def test_the_handle_field_table_is_this_pythons_handle_layout():
    row = asyncio_versions.ASYNCIO[sys.version_info[:2]]
    assert row is asyncio_versions.CURRENT is runtime_loop._ASYNCIO
    handle_slots = set(asyncio.Handle.__slots__) - {"__weakref__"}
    assert set(row.handle_fields) == handle_slots
    assert set(row.timer_fields) == handle_slots | set(asyncio.TimerHandle.__slots__)


def test_the_transport_fd_check_row_is_what_this_pythons_loop_does():
    """A socket another open transport serves is refused by _make_socket_transport exactly where
    stock asyncio refuses it (from 3.12), on both loops."""
    for factory in LOOPS.values():
        loop = factory()
        a, b = socket.socketpair()
        try:
            first, _ = loop.run_until_complete(loop.create_connection(asyncio.Protocol, sock=a))
            try:
                second = loop._make_socket_transport(a, asyncio.Protocol())
            except RuntimeError as exc:
                refused = "is used by transport" in str(exc)
            else:
                refused = False
                second.close()
            assert refused == asyncio_versions.CURRENT.transports_check_fd, factory
            first.close()
            loop.run_until_complete(asyncio.sleep(0))
        finally:
            loop.close()
            b.close()


def test_handles_built_by_the_loop_equal_asyncios_own():
    loop = runtime.new_event_loop()
    try:
        def callback(*args):
            pass

        made = loop.call_soon(callback, 1, 2)
        reference = asyncio.Handle(callback, (1, 2), loop, made._context)
        assert type(made) is asyncio.Handle
        assert _fields(made) == _fields(reference)
        assert repr(made) == repr(reference)

        timer = loop.call_at(loop.time() + 60, callback, 3)
        reference = asyncio.TimerHandle(timer._when, callback, (3,), loop, timer._context)
        reference._scheduled = True
        assert type(timer) is asyncio.TimerHandle
        assert _fields(timer) == _fields(reference)
        assert repr(timer) == repr(reference)
        timer.cancel()
        assert loop._timer_cancelled_count == 1
    finally:
        loop.close()


def test_callbacks_run_in_order_with_their_context_and_cancelled_ones_do_not(any_loop):
    import contextvars
    var = contextvars.ContextVar("var", default="unset")
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in ctx")
    any_loop.call_soon(lambda: seen.append(("a", var.get())))
    any_loop.call_soon(lambda: seen.append(("b", var.get())), context=ctx)
    any_loop.call_soon(seen.append, ("c", "cancelled")).cancel()
    any_loop.call_later(0.001, lambda: seen.append(("timer", var.get())), context=ctx)
    any_loop.call_at(any_loop.time() + 60, seen.append, "far").cancel()
    any_loop.run_until_complete(asyncio.sleep(0.01))
    assert seen == [("a", "unset"), ("b", "in ctx"), ("timer", "in ctx")]


def _failing_callback():
    raise ValueError("boom")


def test_a_failing_callback_reaches_the_exception_handler_as_in_asyncio(any_loop):
    reports = []
    any_loop.set_exception_handler(lambda loop, context: reports.append(context))
    handle = any_loop.call_soon(_failing_callback)
    timer = any_loop.call_later(0, _failing_callback)
    any_loop.run_until_complete(asyncio.sleep(0.01))
    assert [r["handle"] for r in reports] == [handle, timer]
    for report in reports:
        assert set(report) == {"message", "exception", "handle"}
        assert report["message"].startswith("Exception in callback _failing_callback()")
        assert type(report["exception"]) is ValueError


def test_keyboard_interrupt_in_a_callback_propagates_and_later_callbacks_stay_queued(any_loop):
    seen = []

    def interrupt():
        raise KeyboardInterrupt

    any_loop.call_soon(interrupt)
    any_loop.call_soon(seen.append, "after")
    with pytest.raises(KeyboardInterrupt):
        any_loop.run_until_complete(asyncio.sleep(0))
    assert seen == []
    any_loop.run_until_complete(asyncio.sleep(0))
    assert seen == ["after"]


def test_a_handle_subclass_in_the_ready_queue_runs_through_its_own_run(any_loop):
    ran = []

    class Custom(asyncio.Handle):
        __slots__ = ()

        def _run(self):
            ran.append("custom")
            super()._run()

    any_loop._ready.append(Custom(ran.append, ("callback",), any_loop, None))
    any_loop.run_until_complete(asyncio.sleep(0))
    assert ran == ["custom", "callback"]


def _call_site_lines(loop) -> list[int]:
    """Where debug mode says each handle/task was created: the line of the last frame."""
    async def main():
        pass

    here = sys._getframe().f_lineno
    handles = [loop.call_soon(print), loop.call_later(60, print), loop.call_at(loop.time() + 60, print)]
    task = loop.create_task(main())
    lines = [h._source_traceback[-1].lineno - here for h in handles]
    lines.append(task._source_traceback[-1].lineno - here)
    for h in handles:
        h.cancel()
    loop.run_until_complete(task)
    return lines


def test_debug_mode_source_tracebacks_end_at_the_caller_as_in_asyncio():
    lines = {}
    for name, factory in LOOPS.items():
        loop = factory()
        loop.set_debug(True)
        try:
            lines[name] = _call_site_lines(loop)
        finally:
            loop.close()
    assert lines["runtime"] == lines["asyncio"] == [1, 1, 1, 2]


def test_a_closed_loop_refuses_callbacks_timers_and_tasks(any_loop):
    any_loop.close()
    for schedule in (lambda: any_loop.call_soon(print), lambda: any_loop.call_later(1, print),
                     lambda: any_loop.call_at(1.0, print)):
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            schedule()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        any_loop.create_task(coro)
    coro.close()
    with pytest.raises(TypeError):
        any_loop.call_later(None, print)
    with pytest.raises(TypeError):
        any_loop.call_at(None, print)


def test_a_task_factory_is_used_and_the_name_set(any_loop):
    made = []

    def factory(loop, coro, **kwargs):
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    any_loop.set_task_factory(factory)
    task = any_loop.create_task(asyncio.sleep(0), name="named")
    any_loop.run_until_complete(task)
    assert made == [task] and task.get_name() == "named"


def test_many_cancelled_timers_are_dropped_from_the_heap_in_one_pass(any_loop):
    async def main():
        loop = asyncio.get_running_loop()
        keep = loop.call_later(60, print)
        for handle in [loop.call_later(60 + i, print) for i in range(1000)]:
            handle.cancel()
        await asyncio.sleep(0)
        return keep

    keep = any_loop.run_until_complete(main())
    assert any_loop._scheduled == [keep] and any_loop._timer_cancelled_count == 0
    keep.cancel()
