"""Tracepoints: where the runtime tells what it does.

THE CONTRACT (the event loop calls these; the probe-file writer implements them):

    from .tracing import TRACE
    if TRACE.on:
        TRACE.io_register(fd, events)

``TRACE`` is one module-level object. While tracing is off, ``TRACE.on`` is False and every
tracepoint costs the runtime one attribute test, nothing more: the call itself is never made.
Turning tracing on (``COROSCOPE_TRACE=1`` in the environment, or ``runtime.tracing.enable()``)
swaps the methods for ones that write records to the probe file. It changes ``TRACE`` in place
(its class), never rebinds the name, so ``from .tracing import TRACE`` stays valid.

Tracepoints and the place in the loop that calls them:

    task_create(task)                  BaseEventLoop.create_task / the task factory
    iteration(event_list, ready, ntodo, report_error)
                                       _run_once, after the poll and the due timers: the
                                       iteration's record (io_ready for each event and
                                       loop_iteration), then the ntodo ready handles, each run as
                                       run_handle does, INSTEAD of the loop running them (one call
                                       per iteration: see _fast_tracepoints for why)
    run_handle(handle, report_error)   the debug loop, for every ready handle, INSTEAD of
                                       handle._run(): it finds the task a handle steps, sets the
                                       thread's current task/request slot, times the step (step
                                       begin, step end, slow step) and runs the handle. The step
                                       begin says how the step was queued (first step, self-wake,
                                       woken: told by the handle's callback, the Task's __step or
                                       its wakeup) and by when (the end of the iteration's poll;
                                       see runtime.probefile, "Wakes and scheduled delay"). A plain
                                       callback (not a task step) gets no record, only a clock
                                       read (a slow one is reported); its request, if its context
                                       has one, is put in the slot while it runs
    task_done(task)                    (registered by task_create as a done callback)
    io_register(fd, events)            add_reader / add_writer (events: 1 read, 4 write)
    io_unregister(fd, events)          remove_reader / remove_writer
    io_ready(fd, events)               each event the poll returns (through iteration)
    timer_add(handle)                  call_at
    timer_fire(handle)                 a timer moved to the ready queue
    timer_cancel(handle)               a cancelled timer dropped from the heap
    fd_open(fd, kind)                  every fd the loop itself creates (kind: "epoll", "eventfd",
                                       "socket", "pipe", "timerfd", "file"); the writer captures
                                       a short creation stack
    fd_close(fd)                       every fd the loop itself closes
    loop_iteration(poll_ns, nevents, ncallbacks)   each _run_once (through iteration)
    executor_submit(future)            run_in_executor, before submitting
    executor_done(future)              the executor future's done callback
    request_begin(id, name, parent)    runtime.requests.request, entering (not a loop call site)
    request_end(id, duration_ns, failed, parent, name)   ... and leaving (name: renamed, or None)
    coro_never_awaited(coro)           CPython collected a coroutine never awaited (not a loop
                                       call site: enable() wraps warnings._warn_unawaited_coroutine,
                                       through which the interpreter reports it)

Turning it on: ``enable()`` (or ``COROSCOPE_TRACE=1`` and ``enable_from_env()``, which the
bootstrap calls) creates the probe file (``runtime.probefile``, where the record layout and the
meaning of every field is documented) and switches ``TRACE`` to ``_On``. ``disable()`` switches
back and removes the file; so does normal exit. A forked child starts its own probe file.
Optional environment: ``COROSCOPE_TRACE_SLOW_MS`` (slow-step threshold, default 100);
``COROSCOPE_TRACE_RING`` (records in the ring, a power of two, default 16384);
``COROSCOPE_TRACE_CORO_ORIGIN`` (frames of ``sys.set_coroutine_origin_tracking_depth`` while
tracing is on, default 1, 0 leaves it alone): where a never-awaited coroutine was created. It
costs every coroutine creation about 80 ns per frame (measured on 3.11), which is why the
default is the one frame that called the coroutine function; more frames let the record skip
asyncio's and the runtime's. CPython keeps the depth per thread: the thread that enables
tracing (the main thread, from the bootstrap) is the one tracked.

Task ids are small integers, process-wide, never reused (the ``asyncio`` default name number is
kept in the task create record). The thread slot holds the task a step runs and the request it
runs for (``runtime.requests.REQUEST_ID`` in the handle's context) for exactly the duration of
the step, so a syscall made inside the step is charged to that task and request.
"""
from __future__ import annotations

import asyncio
import atexit
import collections
import functools
import itertools
import os
import struct
import sys
import threading
import time
import types

from . import accel
from . import probefile as pf

_monotonic_ns = time.monotonic_ns
_get_ident = threading.get_ident


class _Off:
    """Tracing off: every method exists so callers never need getattr; none is ever called."""

    on = False

    def task_create(self, task): pass
    def run_handle(self, handle, report_error=None): handle._run()
    def task_done(self, task): pass
    def io_register(self, fd, events): pass
    def io_unregister(self, fd, events): pass
    def io_ready(self, fd, events): pass
    def timer_add(self, handle): pass
    def timer_fire(self, handle): pass
    def timer_cancel(self, handle): pass
    def fd_open(self, fd, kind): pass
    def fd_close(self, fd): pass
    def loop_iteration(self, poll_ns, nevents, ncallbacks): pass
    def iteration(self, event_list, ready, ntodo, report_error):
        # The generic form of the per-iteration tracepoint, in terms of the per-event and
        # per-handle ones: _On replaces it with one that writes the records itself; a subclass
        # (a test's recorder) sees io_ready, loop_iteration and run_handle calls.
        if event_list is not None:
            for key, mask in event_list:
                self.io_ready(key.fd, (mask & 1) | (mask & 2) << 1)
            self.loop_iteration(0, len(event_list), ntodo)
        if report_error is not None:
            for _ in range(ntodo):
                handle = ready.popleft()
                if not handle._cancelled:
                    self.run_handle(handle, report_error)
    def executor_submit(self, future): pass
    def executor_done(self, future): pass
    def request_begin(self, request_id, name, parent): pass
    def request_end(self, request_id, duration_ns, failed, parent, name=None): pass
    def coro_never_awaited(self, coro): pass


TRACE = _Off()
# ``on`` lives in the instance's dict as well as in the two classes: CPython 3.11 specialises a
# read of an instance attribute (LOAD_ATTR_WITH_HINT) but not of a class attribute read through
# an instance, and every tracepoint test in the loop is such a read, traced or not.
TRACE.on = False

# Frames from these directories are the machinery, not the place a user created a task or fd:
# the runtime, asyncio, and coroscope's own diag package (the instrument's task factory, fd
# tracking's wrappers, the web servers' request marking sit between the user and the call)
_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
_MACHINERY = (_RUNTIME_DIR, _ASYNCIO_DIR,
              os.path.join(os.path.dirname(_RUNTIME_DIR.rstrip(os.sep)), "diag") + os.sep)
_TASK_TYPES = (asyncio.Task,) + ((asyncio.tasks._PyTask,) if hasattr(asyncio.tasks, "_PyTask") else ())

_C = pf.COUNTER_INDEX
_TASKS_ALIVE, _TASKS_CREATED, _STEPS, _SLOW = (_C["tasks_alive"], _C["tasks_created"], _C["steps"],
                                               _C["slow_steps"])
_REQ_BEGUN, _REQ_DONE, _REQ_ACTIVE = _C["requests_begun"], _C["requests_done"], _C["requests_active"]
_REQ_LAST_ID = _C["request_last_id"]
_LIVE_WORDS, _LIVE_ID, _LIVE_SIZE = pf.LIVE_WORDS, pf.LIVE_ID, pf.LIVE_ENTRY_SIZE
_pack_live = pf.LIVE_ENTRY_STRUCT.pack_into
_ITER, _IO_READY, _TIMERS_FIRED, _EXEC = (_C["loop_iterations"], _C["io_ready"], _C["timers_fired"],
                                         _C["executor_pending"])
_FDS_OPEN, _RECORDS = _C["fds_open_unknown"], _C["records_written"]


def _user_location(depth: int = 2) -> str:
    """file:line of the nearest caller outside the runtime and asyncio."""
    f = sys._getframe(depth)
    while f is not None and f.f_code.co_filename.startswith(_MACHINERY):
        f = f.f_back
    if f is None:
        return ""
    return f"{f.f_code.co_filename}:{f.f_lineno}"


def short_stack(depth: int = 2, limit: int = 8) -> str:
    """Up to ``limit`` frames, innermost first, "file:line in func" one per line: the frames of
    the program (the runtime's, asyncio's and runpy's are left out, unless there are no others)."""
    frame = sys._getframe(depth)
    every, mine = [], []
    while frame is not None and len(mine) < limit:
        code = frame.f_code
        line = f"{code.co_filename}:{frame.f_lineno} in {code.co_qualname}"
        if len(every) < limit:
            every.append(line)
        if not code.co_filename.startswith(_MACHINERY + ("<frozen",)):
            mine.append(line)
        frame = frame.f_back
    return "\n".join(mine or every)


def coroutine_origin(coro) -> tuple[str, str, str]:
    """(qualname, "file:line" where it was created, "file:line" where it is defined) of a
    coroutine; created is the innermost frame of ``cr_origin`` outside the machinery (asyncio,
    the runtime), "" when origin tracking was off when it was created."""
    qual = getattr(coro, "__qualname__", None) or type(coro).__qualname__
    origin = getattr(coro, "cr_origin", None) or ()
    created = ""
    for filename, lineno, _func in origin:
        if not created:
            created = f"{filename}:{lineno}"
        if not filename.startswith(_MACHINERY):
            created = f"{filename}:{lineno}"
            break
    code = getattr(coro, "cr_code", None)
    defined = f"{code.co_filename}:{code.co_firstlineno}" if code is not None else ""
    return qual, created, defined


def coroutine_stack(task, limit: int = 8) -> str:
    """Where a task's coroutine chain stands now (innermost last), one frame per line."""
    lines = []
    coro = task.get_coro() if hasattr(task, "get_coro") else None
    coro = getattr(coro, "coroscope_wrapped", coro)
    while coro is not None and len(lines) < limit:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_qualname}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return "\n".join(lines)


def callback_location(cb) -> tuple[str, str]:
    """(name, "file:line in qualname") of the code a plain callback runs, as far as it is known.

    A transport's read callback runs the user's protocol: that protocol's data_received (or
    buffer_updated) is the place worth naming, not the transport's machinery."""
    while isinstance(cb, functools.partial):
        cb = cb.func
    protocol = getattr(getattr(cb, "__self__", None), "_protocol", None)
    if protocol is not None:
        for method in ("data_received", "buffer_updated", "datagram_received"):
            code = getattr(getattr(type(protocol), method, None), "__code__", None)
            if code is not None:
                return (f"{code.co_qualname} (via {_callable_name(cb)})",
                        f"{code.co_filename}:{code.co_firstlineno} in {code.co_qualname}")
    code = getattr(getattr(cb, "__func__", cb), "__code__", None)
    if code is None:
        return _callable_name(cb), ""
    return code.co_qualname, f"{code.co_filename}:{code.co_firstlineno} in {code.co_qualname}"


def _callable_name(cb) -> str:
    return getattr(cb, "__qualname__", None) or type(cb).__qualname__


# Record kinds as plain ints: an IntEnum member lookup costs more than the store it labels.
(_TASK_CREATE, _STEP_BEGIN, _STEP_END, _TASK_DONE, _IO_REGISTER, _IO_UNREGISTER, _IO_READY_REC,
 _TIMER_ADD, _TIMER_FIRE, _TIMER_CANCEL, _FD_OPEN, _FD_CLOSE, _REQUEST_BEGIN, _REQUEST_END,
 _LOOP_ITERATION, _EXECUTOR_SUBMIT, _EXECUTOR_DONE, _SLOW_STEP, _TASK_NAME,
 _CORO_NEVER_AWAITED) = (int(k) for k in pf.Rec)
assert _TASK_NAME == pf.Rec.TASK_NAME and _CORO_NEVER_AWAITED == pf.Rec.CORO_NEVER_AWAITED
_WAKE_UNKNOWN, _WAKE_FIRST, _WAKE_SELF, _WAKE_WOKEN = (pf.WAKE_UNKNOWN, pf.WAKE_FIRST,
                                                      pf.WAKE_SELF, pf.WAKE_WOKEN)
# The names of the callbacks through which asyncio's Task queues a step: its own step (the C
# Task's TaskStepMethWrapper has no __name__; the Python Task's bound __step) or the done
# callback it adds to the future it awaits (C: task_wakeup, Python: __wakeup).
_STEP_NAMES = {"__step": _WAKE_SELF, "task_wakeup": _WAKE_WOKEN, "__wakeup": _WAKE_WOKEN}


def _wake_of_callback_type(cb_type: type) -> int:
    """WAKE_SELF for the C Task's step wrapper; -1: look at the callback's name (per call)."""
    return _WAKE_SELF if cb_type.__name__ == "TaskStepMethWrapper" else -1
_NO_THREAD = pf.NO_THREAD
_IS_TASK_TYPE: dict[type, bool] = {}     # type of a callback's __self__ -> is it a Task
_SLOT_WORDS = pf.SLOT_SIZE // 8          # slot i's fields are slot_words[i * _SLOT_WORDS + k]


class _On(_Off):
    """Tracing on: every tracepoint writes into the probe file (``self._w``)."""

    on = True
    # The per-iteration, per-event and per-handle tracepoints are closures in the instance's
    # dict (_fast_tracepoints). None here, not the methods _Off has: CPython 3.11 specialises
    # the loop's ``TRACE.iteration`` read (LOAD_ATTR_WITH_HINT) only if the class attribute it
    # shadows is not a function; otherwise every read takes the generic lookup, some 250
    # instructions an iteration.
    iteration = run_handle = io_ready = timer_fire = loop_iteration = None

    # State set by enable(): _w (ProbeWriter), _emit (its emit), _words (its slot_words),
    # _counters (its live counters), _ids {id(task): task id, negative until the first step},
    # _cur [current task id per slot], _slow_ns, _next_task, _exec_t0 {id(future): submit ns},
    # _request_var (runtime.requests.REQUEST_ID), _ready_by [diag.instrument's loops: ns at
    # the end of the last loop iteration, a step run now was queued by then; the runtime's
    # iteration keeps its own, queued_by], _check_name {id(task) of tasks registered
    # with a default name and not stepped yet}, _unawaited_backlog (see coro_never_awaited).
    # _ids holds -id until a task's first step (so that step is known as the first: WAKE_FIRST).

    def _slot(self) -> int:
        slot = self._w._slot_of_ident.get(_get_ident())
        return self._w.thread_slot() if slot is None else slot

    def _current_request(self) -> int:
        return self._request_var.get()

    def _task_id(self, task, slot: int) -> int:
        """The id of ``task``, giving one (and a 'late' create record) to a task that was
        created before tracing was on or without the task factory."""
        tid = self._ids.get(id(task))
        if tid is None:
            tid = self._register(task, slot, late=1)
        if tid < 0:
            tid = self._first_step(task, -tid, slot)
        return tid

    def _first_step(self, task, tid: int, slot: int) -> int:
        """asyncio.create_task(coro, name=...) names the task after the loop created it: a task
        created with a default name is stored with a negative id until its first step, which
        reports the name it has by then (TASK_NAME) if it changed."""
        self._ids[id(task)] = tid
        if id(task) in self._check_name:
            self._check_name.discard(id(task))
            name = task.get_name()
            if not (name.startswith("Task-") and name[5:].isdigit()):
                self._emit(_TASK_NAME, slot, 0, tid, 0, _monotonic_ns(), 0, self._w.intern(name))
        return tid

    def _register(self, task, slot: int, late: int) -> int:
        w = self._w
        tid = self._next_task()
        name = task.get_name()
        default_no = 0
        if name.startswith("Task-") and name[5:].isdigit():
            default_no, name_sid = int(name[5:]), 0
            self._check_name.add(id(task))        # look at the name again at the first step
        else:
            name_sid = w.intern(name)
        self._ids[id(task)] = -tid                # negative until its first step
        coro = task.get_coro()
        coro = getattr(coro, "coroscope_wrapped", coro)      # diag.instrument's step timer
        qual = getattr(coro, "__qualname__", None) or type(coro).__qualname__
        parent = self._cur[slot] if slot != _NO_THREAD else 0
        where = "" if late else _user_location(3)
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        defined = f"{code.co_filename}:{code.co_firstlineno}" if code is not None else ""
        self._emit(_TASK_CREATE, slot, late, tid, self._current_request() if not late else 0,
                   _monotonic_ns(), parent, name_sid, w.intern(qual), w.intern(where), default_no,
                   w.intern(defined))
        c = self._counters
        c[_TASKS_CREATED] += 1
        c[_TASKS_ALIVE] += 1
        task.add_done_callback(self.task_done)
        return self._ids[id(task)]

    # ------------------------------------------------------------------------------ tasks
    def task_create(self, task):
        if id(task) not in self._ids:
            self._register(task, self._slot(), late=0)

    def task_done(self, task):
        tid = self._ids.pop(id(task), None)
        if tid is None:
            return
        tid = abs(tid)
        self._check_name.discard(id(task))
        if self._unawaited_backlog:
            self._flush_unawaited()
        # _state/_exception, not cancelled()/exception(): those would mark the exception as
        # retrieved and silence asyncio's "exception was never retrieved".
        if task._state == "CANCELLED":
            outcome, exc_sid = 2, 0
        elif task._exception is not None:
            outcome, exc_sid = 1, self._w.intern(type(task._exception).__qualname__)
        else:
            outcome, exc_sid = 0, 0
        self._emit(_TASK_DONE, self._slot(), outcome, tid, 0, _monotonic_ns(), 0, exc_sid)
        self._counters[_TASKS_ALIVE] -= 1
        self._counters[_RECORDS] = self._w.records_written

    # run_handle, io_ready, timer_fire and loop_iteration: see _fast_tracepoints.

    def _slow_step(self, slot, task, req, duration_ns, what) -> None:
        """A task step over the threshold. Its stack is where the task stands after the step
        (the await that ended it): the code that was slow is the code just before."""
        where = coroutine_stack(what)
        text = f"task {what.get_name()} ({task}) suspended at:\n{where}" if where else \
            f"task {what.get_name()} ({task}) finished"
        self._emit(_SLOW_STEP, slot, 0, task, req, _monotonic_ns(), duration_ns, self._w.intern(text))
        self._counters[_SLOW] += 1

    def _slow_callback(self, slot, req, duration_ns, callback) -> None:
        """A plain callback (not a task step) over the threshold: a protocol's data_received, a
        call_soon. Nothing is left of its stack once it returns, so the record names the code
        that ran: the user's protocol method for a transport's read callback, else the callable."""
        name, where = callback_location(callback)
        text = f"callback {name}\n{where}" if where else f"callback {name}"
        self._emit(_SLOW_STEP, slot, 0, 0, req, _monotonic_ns(), duration_ns, self._w.intern(text))
        self._counters[_SLOW] += 1

    # --------------------------------------------------------------------------------- io
    def io_register(self, fd, events):
        self._emit(_IO_REGISTER, _NO_THREAD, events, 0, 0, _monotonic_ns(), fd)

    def io_unregister(self, fd, events):
        self._emit(_IO_UNREGISTER, _NO_THREAD, events, 0, 0, _monotonic_ns(), fd)

    # ----------------------------------------------------------------------------- timers
    def timer_add(self, handle):
        self._emit(_TIMER_ADD, _NO_THREAD, 0, 0, 0, _monotonic_ns(), id(handle),
                   int(handle.when() * 1e9), self._w.intern(_callable_name(handle._callback)))

    def timer_cancel(self, handle):
        self._emit(_TIMER_CANCEL, _NO_THREAD, 0, 0, 0, _monotonic_ns(), id(handle))

    # -------------------------------------------------------------------------------- fds
    def fd_open(self, fd, kind):
        w = self._w
        code = pf.fd_kind_code(kind)
        slot = self._slot()
        task = self._cur[slot] if slot != _NO_THREAD else 0
        req = self._current_request()
        stack = w.intern(short_stack(2))
        gen = w.fd_table_set(fd, code, True, task, req, stack)
        self._emit(_FD_OPEN, slot, code, task, req, _monotonic_ns(), fd, stack, gen)
        self._counters[_FDS_OPEN + code] += 1
        self._counters[_RECORDS] = w.records_written

    def fd_close(self, fd):
        w = self._w
        code = w.fd_kind_of(fd)
        if code < 0:
            code = pf.FdKind.UNKNOWN
        else:
            self._counters[_FDS_OPEN + code] -= 1
        gen = w.fd_table_set(fd, code, False)
        self._emit(_FD_CLOSE, _NO_THREAD, code, 0, 0, _monotonic_ns(), fd, 0, gen)
        self._counters[_RECORDS] = w.records_written

    def executor_submit(self, future):
        now = _monotonic_ns()
        self._exec_t0[id(future)] = now
        self._emit(_EXECUTOR_SUBMIT, _NO_THREAD, 0, self._cur_task(), 0, now, id(future))
        self._counters[_EXEC] += 1

    def executor_done(self, future):
        now = _monotonic_ns()
        t0 = self._exec_t0.pop(id(future), None)
        self._emit(_EXECUTOR_DONE, _NO_THREAD, 0, 0, 0, now, id(future), now - t0 if t0 else 0)
        self._counters[_EXEC] -= 1

    def _cur_task(self) -> int:
        slot = self._slot()
        return self._cur[slot] if slot != _NO_THREAD else 0

    # ---------------------------------------------------------------------- never awaited
    def coro_never_awaited(self, coro):
        """A coroutine collected without being awaited (called from the interpreter's warning
        path, at whatever point the collection happened). The collection may run inside one of
        the writer's locked sections (a cycle collection triggered by an allocation there):
        then the record is kept in a backlog and written at the next chance, not deadlocked."""
        slot = self._slot()
        entry = (_monotonic_ns(), slot, self._cur[slot] if slot != _NO_THREAD else 0,
                 self._current_request(), *coroutine_origin(coro))
        self._unawaited_backlog.append(entry)
        lock = self._w._lock
        if lock.acquire(blocking=False):       # not held by this thread: interning is safe
            lock.release()
            self._flush_unawaited()

    def _flush_unawaited(self) -> None:
        backlog, intern = self._unawaited_backlog, self._w.intern
        while backlog:
            ns, slot, task, req, qual, created, defined = backlog.pop(0)
            self._emit(_CORO_NEVER_AWAITED, slot, 0, task, req, ns, 0, intern(qual),
                       intern(created), intern(defined))

    # --------------------------------------------------------------------------- requests
    # The order of the stores is the probe file's contract ("Requests a window counts"): at a
    # begin the LIVE entry, then the counters, then the slot; at an end the slot, then the
    # entry, then the counter. A syscall counter's window is exact because of it.
    def request_begin(self, request_id, name, parent):
        w = self._w
        slot = self._slot()
        task = self._cur[slot] if slot != _NO_THREAD else 0
        now = _monotonic_ns()
        sid = w.intern(name)
        n = self._live_n
        i = request_id % n if n else 0
        if n and not self._live[i * _LIVE_WORDS + _LIVE_ID] and len(w._slot_of_ident) <= 1:
            # the usual case, inlined (w.live_insert is the whole rule): its entry is free
            _pack_live(w.mm, self._live_off + i * _LIVE_SIZE, parent, sid, now, request_id)
        else:
            w.live_insert(request_id, parent, sid, now)
        c = self._counters
        c[_REQ_BEGUN] += 1
        c[_REQ_ACTIVE] += 1
        if request_id > c[_REQ_LAST_ID]:
            c[_REQ_LAST_ID] = request_id
        if slot != _NO_THREAD:
            self._words[slot * _SLOT_WORDS + 2] = request_id
        self._emit(_REQUEST_BEGIN, slot, 0, task, request_id, now, parent, sid)

    def request_end(self, request_id, duration_ns, failed, parent, name=None):
        slot = self._slot()
        task = self._cur[slot] if slot != _NO_THREAD else 0
        if slot != _NO_THREAD:
            self._words[slot * _SLOT_WORDS + 2] = parent
        n = self._live_n
        at = request_id % n * _LIVE_WORDS + _LIVE_ID if n else 0
        if n and self._live[at] == request_id:
            self._live[at] = 0
        else:
            self._w.live_remove(request_id)
        self._emit(_REQUEST_END, slot, int(bool(failed)), task, request_id, _monotonic_ns(),
                   duration_ns, self._w.intern(name) if name else 0)
        c = self._counters
        c[_REQ_DONE] += 1
        c[_REQ_ACTIVE] -= 1


def _fast_tracepoints(tracer: _On) -> dict:
    """The tracepoints the loop calls per iteration, per event or per handle, as closures over
    locals.

    ``enable`` stores them in TRACE's instance dict, where they shadow the class's methods (an
    instance attribute wins over a method), so ``TRACE.iteration(...)`` is one Python call with
    no attribute lookups inside: on this path a record costs one ``pack_into``.

    Why the runtime makes one call per loop iteration (``iteration``) rather than one per event
    and per handle (``io_ready``, ``run_handle``, ``loop_iteration``): at one connection a
    request is a couple of loop iterations of one event and one callback each, and there what
    tracing costs is Python calls, clock reads, int arithmetic and records, more than anything
    they say (counted with callgrind on the echo benchmark: some 13,000 instructions per
    iteration in the first version, against 21,000 for the untraced iteration itself). So:
    one record for the poll and up to three of its ready events (the probe file's
    LOOP_ITERATION, version 3), stamped by one clock read at the call's start; the
    ready handles run in the same call, their work inlined as the untraced loop has it, with
    one clock read per handle (the end of one callback is the start of the next); a record's
    ring offset is looked up (``ProbeWriter.ring_offsets``), not computed from
    its sequence number; and the hot records' head words stay under 2**30, which struct packs
    fastest (``NO_THREAD``). ``io_ready`` and ``loop_iteration`` stay for diag.instrument
    (stock asyncio loops), ``run_handle`` for the runtime's debug mode.
    """
    w = tracer._w
    mm, pack, next_seq = w.mm, pf.RECORD_WORDS_STRUCT.pack_into, w._seq_counter.__next__
    offsets, ring_mask = w.ring_offsets, w.ring_mask
    pack_a, pack_abcd = pf.RECORD_A_STRUCT.pack_into, pf.RECORD_ABCD_STRUCT.pack_into
    pack_task_ab = pf.RECORD_TASK_AB_STRUCT.pack_into
    counters, words, cur, slot_of_ident = w.counters, w.slot_words, tracer._cur, w._slot_of_ident
    request_var, slow_ns, task_id, slow_step = (tracer._request_var, tracer._slow_ns,
                                                tracer._task_id, tracer._slow_step)
    slow_callback, ids, ready_by = tracer._slow_callback, tracer._ids, tracer._ready_by
    wake_of_type: dict[type, int] = {}        # type of a task's callback -> wake, -1: by name
    step_names = _STEP_NAMES
    io_head = _IO_READY_REC | _NO_THREAD << 16              # + events << 32
    fire_head = _TIMER_FIRE | _NO_THREAD << 16
    iter_head = _LOOP_ITERATION | _NO_THREAD << 16
    inline_max = pf.ITERATION_INLINE_EVENTS
    is_task_type, task_types = _IS_TASK_TYPE, _TASK_TYPES
    handle_type, timer_handle_type = asyncio.Handle, asyncio.TimerHandle   # _run: context.run

    poll_stamp = [0]       # io_ready: when the current poll's first event was recorded; 0: none yet

    # loop_iterations and io_ready are stored with records_written (the counter after them) in
    # one pack; they are read back from the mapping, where the C iteration keeps them too.
    pack3, counters_at = struct.Struct("<qqq").pack_into, w.layout.counters_off + 8 * _ITER
    assert _IO_READY == _ITER + 1 and _RECORDS == _ITER + 2
    queued_by = 0          # the end of the current iteration's poll: its steps were queued by then
    callbacks_end = 0      # when the last iteration's callbacks ended: the next poll began just after

    def run_one(handle, t, queued, report_error):
        """Run one ready handle as the traced loop does; ``t``: when it starts (the end of the
        one before, or the iteration's stamp), ``queued``: its iteration's stamp, by when it was
        certainly in the ready queue (0: unknown). Returns the clock at its end, -1 if it was cancelled.
        The Python ``iteration`` runs every handle through it; the C one
        (runtime._speedups.trace_iteration) only those that are not a plain callback outside any
        request, which get no record."""
        nonlocal callbacks_end
        if handle._cancelled:
            return -1
        cb = handle._callback
        owner = getattr(cb, "__self__", None)
        is_task = is_task_type.get(type(owner))
        if is_task is None:
            is_task = is_task_type[type(owner)] = issubclass(type(owner), task_types)
        if is_task:
            # Which of the Task's callbacks: its __step (queued by itself, or at creation),
            # its wakeup (queued by the future it awaited), or another method (task.cancel
            # through call_later): not a step at all, run as a plain callback.
            wake = wake_of_type.get(type(cb))
            if wake is None:
                wake = wake_of_type[type(cb)] = _wake_of_callback_type(type(cb))
            if wake < 0:
                wake = step_names.get(getattr(cb, "__name__", ""), 0)
                is_task = wake != 0
        ctx = handle._context
        req = ctx.get(request_var, 0)
        slot = None
        if is_task or req:
            slot = slot_of_ident.get(_get_ident())
            if slot is None:
                slot = w.thread_slot()
                if slot == _NO_THREAD:
                    slot = None
        if slot is None:
            # A plain callback outside any request (or a thread with no slot left): no
            # record, but timed, so that a data_received that blocks the loop is reported
            # like a slow task step.
            if type(handle) is handle_type or type(handle) is timer_handle_type:
                try:
                    ctx.run(cb, *handle._args)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    report_error(handle, exc)
            else:
                handle._run()
            t1 = _monotonic_ns()
            if t1 - t >= slow_ns:
                slow_callback(slot_of_ident.get(_get_ident(), _NO_THREAD), 0, t1 - t, cb)
            return t1
        base = slot * _SLOT_WORDS
        if is_task:
            task = ids.get(id(owner))
            if task is None or task < 0:
                # its first step (WAKE_FIRST), or a task registered late, history unknown
                if task is None:
                    wake = _WAKE_WOKEN if wake == _WAKE_WOKEN else _WAKE_UNKNOWN
                elif wake == _WAKE_SELF:
                    wake = _WAKE_FIRST
                task = task_id(owner, slot)
            head = slot << 16
            if t == queued:
                # the iteration's first handle: its stamp is when the step was certainly
                # queued by, and the step's own begin comes after it (ready_for_ns > 0; 0 is
                # "unknown")
                t = _monotonic_ns()
            words[base + 1] = task
            words[base + 2] = req
            words[base + 3] = t
            cur[slot] = task
            seq = next_seq()
            at = offsets[seq & ring_mask]
            # wake in b, not in the head word, and a duration, not a second timestamp: struct
            # packs an int under 2**30 (one CPython digit) at a fraction of the cost of a
            # larger one (measured: some 300 instructions a field), and the head's aux is
            # bits 32..63
            pack_task_ab(mm, at, seq, _STEP_BEGIN | head, t, task, req,
                         t - queued if queued else 0, wake, seq)
        else:
            # A plain callback in a request: the slot names the request while it runs.
            words[base + 2] = req
        fatal = None
        try:
            if type(handle) is handle_type or type(handle) is timer_handle_type:
                ctx.run(cb, *handle._args)
            else:
                handle._run()
        except (SystemExit, KeyboardInterrupt) as exc:
            fatal = exc
        except BaseException as exc:
            report_error(handle, exc)
        t1 = _monotonic_ns()
        words[base + 2] = 0
        if is_task:
            words[base + 1] = 0
            words[base + 3] = 0
            cur[slot] = 0
            seq = next_seq()
            at = offsets[seq & ring_mask]
            pack_task_ab(mm, at, seq, _STEP_END | head, t1, task, req, t1 - t, 0, seq)
            counters[_STEPS] += 1
            if t1 - t >= slow_ns:
                slow_step(slot, task, req, t1 - t, owner)
        elif t1 - t >= slow_ns:
            slow_callback(slot, req, t1 - t, cb)
        if fatal is not None:
            callbacks_end = t1
            raise fatal
        return t1

    def iteration(event_list, ready, ntodo, report_error):
        """One loop iteration after its poll: its record (event_list None: none), then the
        ``ntodo`` handles popped from ``ready`` and run (report_error None: none; the debug
        loop runs them itself through run_handle). ``report_error(handle, exc)`` is the loop's
        answer to a callback that raised, as Handle._run has it."""
        nonlocal queued_by, callbacks_end
        # The iteration's stamp, read here rather than by the loop as its poll returns: the
        # loop would pay for an int object and this call for reading it back, some 400
        # instructions a request at one connection. It comes after the loop queued the poll's
        # events and the due timers, microseconds after the poll's end.
        poll_end_ns = _monotonic_ns()
        if event_list is not None:
            # The poll's time: from the end of the last iteration's callbacks to this stamp, so
            # the few lines of loop bookkeeping around the poll are counted in, and no clock is
            # read for its start.
            poll_ns = poll_end_ns - callbacks_end if callbacks_end else 0
            # Every step this iteration runs was in the ready queue by this stamp (the poll's
            # events and the due timers were queued before it): its step begin says so.
            queued_by = poll_end_ns
            nevents = len(event_list)
            seq = next_seq()
            at = offsets[seq & ring_mask]
            if nevents == 1:                      # the usual case at low concurrency
                (key, mask), = event_list
                pack_abcd(mm, at, seq, iter_head, poll_end_ns, poll_ns, 1, ntodo,
                          key[1] << 2 | mask, seq)
            elif not nevents:
                pack_abcd(mm, at, seq, iter_head, poll_end_ns, poll_ns, 0, ntodo, 0, seq)
            else:
                inline = [key[1] << 2 | mask for key, mask in event_list[:inline_max]]
                inline += (0,) * (inline_max - len(inline))
                pack(mm, at, seq, iter_head, poll_end_ns, 0, 0, poll_ns, nevents, ntodo,
                     *inline, seq)
                for key, mask in event_list[inline_max:]:
                    seq = next_seq()
                    at = offsets[seq & ring_mask]
                    # selectors' mask (1 read, 2 write) -> the record's (1 read, 4 write)
                    pack_a(mm, at, seq, io_head | ((mask & 1) | (mask & 2) << 1) << 32,
                           poll_end_ns, key[1], seq)
            pack3(mm, counters_at, counters[_ITER] + 1, counters[_IO_READY] + nevents, seq)
        if report_error is None:
            return
        popleft = ready.popleft
        # t: when the next callback starts, the end of the one before; the first is charged
        # this record too, well under a microsecond.
        t = poll_end_ns
        for _ in range(ntodo):
            t1 = run_one(popleft(), t, queued_by, report_error)
            if t1 >= 0:
                t = t1
        callbacks_end = t

    def slow_plain(duration_ns, cb):
        slow_callback(slot_of_ident.get(_get_ident(), _NO_THREAD), 0, duration_ns, cb)

    # The C iteration when the accelerator is chosen (runtime.accel decides): it keeps its own
    # queued_by and callbacks_end and stores the iteration counters in the mapping itself.
    traced_iteration = accel.traced_iteration(
        mm, pf.RECORD_SIZE, w.layout.ring_off, w.layout.ring_records, counters_at, w._seq_counter,
        run_one, slow_plain, request_var, task_types, slow_ns, iter_head, io_head)
    if traced_iteration is not None:
        iteration = traced_iteration

    single: collections.deque = collections.deque()

    def run_handle(handle, report_error):
        single.append(handle)
        iteration(None, single, 1, report_error)

    def io_ready(fd, events):
        # diag.instrument's per-event form: the events of one poll share the first one's stamp
        ns = poll_stamp[0]
        if not ns:
            ns = poll_stamp[0] = _monotonic_ns()
        seq = next_seq()
        at = offsets[seq & ring_mask]
        pack_a(mm, at, seq, io_head | events << 32, ns, fd, seq)
        counters[_IO_READY] += 1

    def timer_fire(handle):
        seq = next_seq()
        at = offsets[seq & ring_mask]
        pack_a(mm, at, seq, fire_head, _monotonic_ns(), id(handle), seq)
        counters[_TIMERS_FIRED] += 1

    def loop_iteration(poll_ns, nevents, ncallbacks):
        # diag.instrument's form, at the end of an iteration whose events went as io_ready;
        # its step timer reads ready_by (the runtime's iteration keeps its own, queued_by)
        poll_stamp[0] = 0
        seq = next_seq()
        at = offsets[seq & ring_mask]
        now = ready_by[0] = _monotonic_ns()
        pack_abcd(mm, at, seq, iter_head, now, poll_ns, nevents, ncallbacks, 0, seq)
        counters[_ITER] += 1
        counters[_RECORDS] = seq

    return {"iteration": iteration, "run_handle": run_handle, "io_ready": io_ready,
            "timer_fire": timer_fire, "loop_iteration": loop_iteration}


# ------------------------------------------------------------------------------ switching on/off
_enable_lock = threading.Lock()
_atexit_registered = False


def enabled() -> bool:
    return TRACE.on


def writer() -> "pf.ProbeWriter | None":
    """The probe writer while tracing is on (for colleagues writing fd origins etc.)."""
    return TRACE.__dict__.get("_w") if TRACE.on else None


def enable(*, slow_step_ms: float | None = None, loop_kind: str = "runtime",
           layout: "pf.Layout | None" = None) -> str:
    """Turn tracing on for this process: create the probe file, switch TRACE. Returns the path.
    Idempotent: a second call returns the existing path."""
    global _atexit_registered
    with _enable_lock:
        if TRACE.on:
            return TRACE._w.path
        if slow_step_ms is None:
            slow_step_ms = float(os.environ.get("COROSCOPE_TRACE_SLOW_MS", "100"))
        slow_ns = int(slow_step_ms * 1e6)
        w = pf.ProbeWriter.create(loop_kind=loop_kind, slow_step_ns=slow_ns, layout=layout)
        from .requests import REQUEST_ID
        d = TRACE.__dict__
        d.update(
            _w=w, _emit=w.emit, _words=w.slot_words, _counters=w.counters, _ids={},
            _cur=[0] * (pf.NSLOTS + 1), _slow_ns=slow_ns, _next_task=itertools.count(1).__next__, _exec_t0={},
            _request_var=REQUEST_ID, _ready_by=[0], _check_name=set(), _unawaited_backlog=[],
            _live=w.live_words, _live_n=w.layout.live_entries, _live_off=w.layout.live_off,
        )
        TRACE.__class__ = _On
        d.update(_fast_tracepoints(TRACE))
        # A plain dict in place of the one ``TRACE.__dict__`` made of the instance's inline
        # values: CPython 3.11-3.13 specialise no attribute read from such a (split) dict, so
        # the loop's ``TRACE.on`` and ``TRACE.iteration`` would each take the generic lookup,
        # some 200 instructions an iteration. The swap is atomic under the GIL.
        TRACE.__dict__ = dict(d)
        TRACE.__dict__["on"] = True            # last: everything a tracepoint uses is in place
        _hook_unawaited(True)
        if not _atexit_registered:
            atexit.register(disable)
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _atexit_registered = True
        return w.path


def disable() -> None:
    """Turn tracing off; the probe file is marked closed and removed."""
    with _enable_lock:
        if not TRACE.on:
            return
        TRACE.on = False                       # first: no tracepoint starts from here on
        if TRACE._unawaited_backlog:
            TRACE._flush_unawaited()
        w = _back_to_off()
        _hook_unawaited(False)
        w.close()


def _back_to_off():
    """TRACE's class back to _Off and its instance state dropped, ``on`` (already False) kept:
    the loop reads it as an instance attribute. Returns the probe writer it held."""
    TRACE.__class__ = _Off
    accel.release_traced_iteration()           # the C iteration's hold on the mapping
    w = TRACE.__dict__.pop("_w")
    for key in list(TRACE.__dict__):
        if key != "on":
            del TRACE.__dict__[key]
    return w


_saved_origin_depth: int | None = None


def _hook_unawaited(on: bool) -> None:
    """Route the interpreter's "coroutine ... was never awaited" through the tracer (and then
    on to the warning, unchanged), and track where coroutines are created while tracing."""
    global _saved_origin_depth
    import warnings
    current = getattr(warnings, "_warn_unawaited_coroutine", None)
    if current is None:
        return
    if on:
        if not getattr(current, "coroscope", False):
            warn_unawaited = _unawaited_hook(warnings, current)
            warn_unawaited.coroscope = True
            warn_unawaited.original = current
            warnings._warn_unawaited_coroutine = warn_unawaited
        depth = int(os.environ.get("COROSCOPE_TRACE_CORO_ORIGIN", "1") or 0)
        if depth > sys.get_coroutine_origin_tracking_depth():
            _saved_origin_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(depth)
    else:
        if getattr(current, "coroscope", False):
            warnings._warn_unawaited_coroutine = current.original
        if _saved_origin_depth is not None:
            sys.set_coroutine_origin_tracking_depth(_saved_origin_depth)
            _saved_origin_depth = None


def _unawaited_hook(warnings, original):
    """A stand-in for ``warnings._warn_unawaited_coroutine`` that records, then warns exactly as
    the original does. The original warns with stacklevel=2, naming the code that was running
    when the coroutine was collected; called from our hook it would name the hook instead. So
    the hook runs the original's own code with a ``warn`` that looks two frames further out
    (past the hook and the shim), and the user sees the warning they would have seen."""
    real_warn = warnings.warn

    def warn(message, category=None, stacklevel=1, source=None):
        return real_warn(message, category, stacklevel + 2, source)

    warn_as_before = types.FunctionType(original.__code__, {**vars(warnings), "warn": warn},
                                        original.__name__, original.__defaults__,
                                        original.__closure__)

    def warn_unawaited(coro):
        if TRACE.on:
            try:
                TRACE.coro_never_awaited(coro)
            except Exception:         # never let the tracer break the warning
                pass
        return warn_as_before(coro)
    return warn_unawaited


def _after_fork_in_child() -> None:
    # The child must not write into its parent's file: it gets its own.
    if not TRACE.on:
        return
    w = TRACE._w
    loop_kind = pf.parse_header(w.mm).loop_kind
    slow_ms = TRACE._slow_ns / 1e6
    layout = w.layout
    TRACE.on = False
    _back_to_off().detach()
    enable(slow_step_ms=slow_ms, loop_kind=loop_kind, layout=layout)


def enable_from_env(loop_kind: str | None = None) -> str | None:
    """The start-up hook (diag.bootstrap.startup), and a runtime loop created in a process it did
    not switch on: tracing on when COROSCOPE_TRACE is 1/true/yes/on. ``loop_kind`` is what the
    header says until a loop names itself (``ProbeWriter.set_loop_kind``)."""
    if os.environ.get("COROSCOPE_TRACE", "").strip().lower() in ("1", "true", "yes", "on"):
        layout = None
        ring = os.environ.get("COROSCOPE_TRACE_RING", "").strip()
        if ring:
            try:
                layout = pf.Layout.default(ring_records=int(ring))
            except ValueError:
                sys.stderr.write(f"coroscope: COROSCOPE_TRACE_RING={ring!r} is not a power of two; "
                                 f"using {pf.RING_RECORDS} records\n")
        # COROSCOPE_LOOP unset leaves asyncio's own loop in place (runtime.install_from_env).
        return enable(loop_kind=loop_kind
                      or os.environ.get("COROSCOPE_LOOP", "").strip().lower() or "asyncio",
                      layout=layout)
    return None
