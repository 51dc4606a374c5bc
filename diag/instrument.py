"""Task tracepoints on a stock asyncio or uvloop loop, for programs that keep their loop.

The runtime's own loop calls ``TRACE`` at every place something happens. A stock loop has no
such calls, so we get what can be had from outside the loop's hot path:

- a task factory (``loop.set_task_factory``) creates each task around a thin coroutine wrapper
  whose ``send``/``throw`` is one step: task create, step begin/end, slow step and done records
  and the thread slot (current task and request) are written exactly as the runtime does;
- on asyncio's pure-Python loop, instance-attribute hooks on the loop and its selector add
  io register/unregister, io ready, timer add and cancel, loop iteration, executor submit/done;
- uvloop's loop is compiled (no instance attributes), so there only the task factory works.

What is lost, compared with the runtime (the README says the same):
- plain callbacks (protocol ``data_received``, ``call_soon`` callbacks) are not steps here: the
  thread slot holds no task or request while they run, so syscalls they make are charged to the
  loop, and a slow callback is not reported (a slow task step is);
- fd open/close records and the fd-origin table (use ``COROSCOPE_FDTRACK``), timer fire;
- on uvloop additionally: io, timers, loop iterations, executor records;
- ``loop_iteration.ncallbacks`` counts task steps only, and poll time is the selector call;
- tasks created before ``instrument(loop)`` are not seen until they step (then "late");
- how a step was queued is told by what the previous one yielded (nothing: a bare yield, the
  task woke itself; a future: it is woken by that future), not by the ready handle; the time by
  which it was queued (the end of the previous loop iteration) only on asyncio's loop, whose
  iterations are hooked: on uvloop a woken step's scheduled delay is not known;
- ``task.get_coro()`` returns the wrapper (it forwards ``cr_frame``, ``cr_await``, ``cr_code``
  so tracebacks, ``Task.get_stack`` and gdb see through it).
"""
from __future__ import annotations

import asyncio
import collections.abc
import threading

from runtime import probefile as pf
from runtime import tracing
from runtime.requests import REQUEST_ID
from runtime.tracing import TRACE

_get_ident = threading.get_ident
_monotonic_ns = tracing._monotonic_ns


class _StepTimedCoroutine(collections.abc.Coroutine):
    """Wraps a task's coroutine; each send/throw is one traced step of ``task_id``."""

    __slots__ = ("_coro", "task_id", "_task", "_next_wake")

    def __init__(self, coro):
        self._coro = coro
        self.task_id = 0
        self._task = None
        # how the next step gets queued, known from what this step yields (probefile WAKE_*)
        self._next_wake = pf.WAKE_UNKNOWN

    def _step(self, method, arg):
        if not TRACE.on:
            return method(arg)
        if not self.task_id and not self._eager_start():
            return method(arg)
        w = TRACE._w
        wake = self._next_wake
        if self.task_id < 0:
            self.task_id = TRACE._first_step(self._task, -self.task_id, w.thread_slot())
            wake = pf.WAKE_FIRST
        slot = w._slot_of_ident.get(_get_ident())
        if slot is None:
            slot = w.thread_slot()
            if slot == pf.NO_THREAD:
                return method(arg)
        task, req = self.task_id, REQUEST_ID.get()
        words, base = TRACE._words, slot * tracing._SLOT_WORDS
        ready = TRACE._ready_by[0]            # read before t0: never later than it
        t0 = _monotonic_ns()
        words[base + 1] = task
        words[base + 2] = req
        words[base + 3] = t0
        TRACE._cur[slot] = task
        TRACE._emit(tracing._STEP_BEGIN, slot, 0, task, req, t0, t0 - ready if ready else 0, wake)
        self._next_wake = pf.WAKE_UNKNOWN
        try:
            yielded = method(arg)
            # asyncio's Task: None (a bare yield) queues its own next step; a future wakes it
            self._next_wake = pf.WAKE_SELF if yielded is None else pf.WAKE_WOKEN
            return yielded
        finally:
            t1 = _monotonic_ns()
            words[base + 1] = 0
            words[base + 2] = 0
            words[base + 3] = 0
            TRACE._cur[slot] = 0
            TRACE._emit(tracing._STEP_END, slot, 0, task, req, t1, t1 - t0)
            TRACE._counters[tracing._STEPS] += 1
            if t1 - t0 >= TRACE._slow_ns and self._task is not None:
                TRACE._slow_step(slot, task, req, t1 - t0, self._task)

    def _eager_start(self) -> bool:
        """3.12+: an eager task (asyncio.eager_task_factory, create_task(eager_start=True))
        runs its first step inside its constructor, before the factory has it to announce.
        The task is current during that step: announce it now, so its create, its first step
        and a done that comes before create_task returns are all recorded."""
        task = asyncio.current_task()
        if task is None or task.get_coro() is not self or self._task is not None:
            return False
        TRACE.task_create(task)
        self.task_id = TRACE._ids.get(id(task), 0)
        self._task = task
        self._next_wake = pf.WAKE_FIRST
        return bool(self.task_id)

    def send(self, value):
        return self._step(self._coro.send, value)

    def throw(self, typ, val=None, tb=None):
        if val is None and tb is None:
            return self._step(self._coro.throw, typ)
        return self._step(lambda _: self._coro.throw(typ, val, tb), None)

    def close(self):
        return self._coro.close()

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        return self.send(None)

    # What asyncio's repr, Task.get_stack and debuggers look at: the wrapped coroutine's.
    @property
    def cr_frame(self):
        return getattr(self._coro, "cr_frame", None)

    @property
    def cr_await(self):
        return getattr(self._coro, "cr_await", None)

    @property
    def cr_code(self):
        return getattr(self._coro, "cr_code", None)

    @property
    def cr_running(self):
        return getattr(self._coro, "cr_running", False)

    @property
    def coroscope_wrapped(self):
        """The task's own coroutine (runtime.tracing names tasks by it)."""
        return self._coro

    def __getattr__(self, name):           # __qualname__, __name__, cr_suspended, ...
        return getattr(self._coro, name)

    def __repr__(self):
        return repr(self._coro)


def _task_factory(previous):
    def factory(loop, coro, **kwargs):
        wrapped = _StepTimedCoroutine(coro)
        if previous is not None:
            task = previous(loop, wrapped, **kwargs)
        else:
            task = asyncio.Task(wrapped, loop=loop, **kwargs)
        if TRACE.on and wrapped._task is None:      # an eager task announced itself already
            TRACE.task_create(task)
            wrapped.task_id = TRACE._ids.get(id(task), 0)
            wrapped._task = task
        return task
    factory.coroscope = True
    factory.wrapped_factory = previous
    return factory


def _is_runtime_loop(loop) -> bool:
    try:
        from runtime.loop import Loop
    except Exception:
        return False
    return isinstance(loop, Loop)


def instrument(loop) -> bool:
    """Add task tracepoints (and, on asyncio's loop, io/timer/iteration hooks) to ``loop``.
    Tracing must be on (``runtime.tracing.enable``). False if there was nothing to do (the
    runtime's own loop, or already instrumented)."""
    if _is_runtime_loop(loop):
        return False
    if getattr(loop, "_coroscope_instrumented", False):
        return False
    previous = loop.get_task_factory()
    if getattr(previous, "coroscope", False):
        return False
    try:
        loop._coroscope_instrumented = True
    except AttributeError:            # uvloop's compiled loop: its factory is ours (checked above)
        pass
    loop.set_task_factory(_task_factory(previous))
    if isinstance(loop, asyncio.BaseEventLoop):
        # a factory the program sets later (asyncio.eager_task_factory, right after the loop is
        # made) is wrapped too, and get_task_factory() gives the program back its own
        set_factory = loop.set_task_factory

        def set_task_factory(factory):
            set_factory(factory if getattr(factory, "coroscope", False) else _task_factory(factory))
        loop.set_task_factory = set_task_factory
        get_factory = loop.get_task_factory
        loop.get_task_factory = lambda: getattr(get_factory(), "wrapped_factory", None)
        _hook_asyncio_loop(loop)          # names itself in the header when it starts running
    elif (w := tracing.writer()) is not None:
        # uvloop's compiled loop takes no instance hooks: it is named when made, which is as
        # good, for nothing makes a uvloop loop it will not run
        w.set_loop_kind("uvloop" if type(loop).__module__.startswith("uvloop") else type(loop).__name__)
    return True


def _hook_asyncio_loop(loop) -> None:
    """Instance-attribute hooks on asyncio's pure-Python loop (selector_events)."""
    state = {"poll_ns": 0, "nevents": 0, "steps_before": 0}
    selector = getattr(loop, "_selector", None)
    if selector is not None:
        select = selector.select

        def timed_select(timeout=None):
            t0 = _monotonic_ns()
            events = select(timeout)
            state["poll_ns"] = _monotonic_ns() - t0
            state["nevents"] = len(events)
            if TRACE.on:
                for key, mask in events:
                    TRACE.io_ready(key.fd, (1 if mask & 1 else 0) | (4 if mask & 2 else 0))
            return events
        selector.select = timed_select

    run_forever = loop.run_forever

    def naming_run_forever():
        # the header names the loop that runs, whatever COROSCOPE_LOOP asked for: a server
        # that makes its own loop (uvicorn --loop asyncio: asyncio.Runner(loop_factory=
        # SelectorEventLoop)) runs this one and no other
        if (w := tracing.writer()) is not None:
            w.set_loop_kind("asyncio")
        return run_forever()
    loop.run_forever = naming_run_forever

    run_once = loop._run_once

    def traced_run_once():
        run_once()
        if TRACE.on:
            steps = TRACE._w.counters[tracing._STEPS]
            TRACE.loop_iteration(state["poll_ns"], state["nevents"], steps - state["steps_before"])
            state["steps_before"] = steps
    loop._run_once = traced_run_once

    for name, events, tracepoint in (("_add_reader", 1, "io_register"),
                                     ("_add_writer", 4, "io_register"),
                                     ("_remove_reader", 1, "io_unregister"),
                                     ("_remove_writer", 4, "io_unregister")):
        original = getattr(loop, name, None)
        if original is None:
            continue

        def hooked(fd, *args, _original=original, _events=events, _tp=tracepoint):
            result = _original(fd, *args)
            if TRACE.on and (_tp == "io_register" or result):
                getattr(TRACE, _tp)(fd if isinstance(fd, int) else fd.fileno(), _events)
            return result
        setattr(loop, name, hooked)

    call_at = loop.call_at

    def traced_call_at(when, callback, *args, context=None):
        handle = call_at(when, callback, *args, context=context)
        if TRACE.on:
            TRACE.timer_add(handle)
        return handle
    loop.call_at = traced_call_at

    cancelled = loop._timer_handle_cancelled

    def traced_cancelled(handle):
        if TRACE.on:
            TRACE.timer_cancel(handle)
        return cancelled(handle)
    loop._timer_handle_cancelled = traced_cancelled

    run_in_executor = loop.run_in_executor

    def traced_run_in_executor(executor, func, *args):
        future = run_in_executor(executor, func, *args)
        if TRACE.on:
            TRACE.executor_submit(future)
            future.add_done_callback(TRACE.executor_done)
        return future
    loop.run_in_executor = traced_run_in_executor


# ------------------------------------------------------------------------------- installation
_installed = False


def _instrumenting_init(init):
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if TRACE.on:
            instrument(self)
    __init__.__wrapped__ = init
    return __init__


def _instrumenting(new_loop):
    def wrapper(*args, **kwargs):
        loop = new_loop(*args, **kwargs)
        if TRACE.on:
            instrument(loop)
        return loop
    wrapper.__wrapped__ = new_loop
    return wrapper


def install(loop_kind: str = "asyncio") -> str:
    """Turn tracing on and instrument every asyncio/uvloop loop made from now on, however it
    is made: through an event loop policy, ``asyncio.run``/``Runner(loop_factory=...)``,
    ``SelectorEventLoop()`` called directly (uvicorn), ``uvloop.new_event_loop`` or
    ``uvloop.run``. Returns the probe file path."""
    global _installed
    path = tracing.enable(loop_kind=loop_kind)
    if _installed:
        return path
    _installed = True
    # every unix asyncio loop is made by this __init__ (the runtime's too: instrument() leaves
    # it alone), so no way of making one escapes; it runs once per loop, never on a hot path
    selector_loop = asyncio.selector_events.BaseSelectorEventLoop
    selector_loop.__init__ = _instrumenting_init(selector_loop.__init__)
    try:
        import uvloop
    except ImportError:
        return path
    uvloop.EventLoopPolicy.new_event_loop = _instrumenting(uvloop.EventLoopPolicy.new_event_loop)
    uvloop.new_event_loop = _instrumenting(uvloop.new_event_loop)
    original_run = uvloop.run

    def run(main, *, loop_factory=None, **kwargs):
        return original_run(main, loop_factory=loop_factory or uvloop.new_event_loop, **kwargs)
    uvloop.run = run
    return path


def install_from_env() -> str | None:
    """Start-up hook: with COROSCOPE_TRACE=1, instrument stock loops, whatever COROSCOPE_LOOP
    says: a program asked to run on the runtime may still make an asyncio loop itself
    (uvicorn --loop asyncio), and the runtime's own loop, which traces itself, is left alone."""
    # the variables are read where tracing reads them (the ring's size included); install()
    # then finds tracing on and only adds the hooks
    if tracing.enable_from_env() is None:
        return None
    return install()
