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
    run_handle(handle)                 _run_once, for every ready handle, INSTEAD of handle._run()
                                       when on: it finds the task a handle steps, sets the thread's
                                       current task/request slot, times the step (step begin, step
                                       end, slow step) and runs the handle
    task_done(task)                    (registered by task_create as a done callback)
    io_register(fd, events)            add_reader / add_writer (events: 1 read, 4 write)
    io_unregister(fd, events)          remove_reader / remove_writer
    io_ready(fd, events)               each event the poll returns
    timer_add(handle)                  call_at
    timer_fire(handle)                 a timer moved to the ready queue
    timer_cancel(handle)               a cancelled timer dropped from the heap
    fd_open(fd, kind)                  every fd the loop itself creates (kind: "epoll", "eventfd",
                                       "socket", "pipe", "timerfd", "file"); the writer captures
                                       a short creation stack
    fd_close(fd)                       every fd the loop itself closes
    loop_iteration(poll_ns, nevents, ncallbacks)   the end of each _run_once
    executor_submit(future)            run_in_executor, before submitting
    executor_done(future)              the executor future's done callback
"""
from __future__ import annotations


class _Off:
    """Tracing off: every method exists so callers never need getattr; none is ever called."""

    on = False

    def task_create(self, task): pass
    def run_handle(self, handle): handle._run()
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
    def executor_submit(self, future): pass
    def executor_done(self, future): pass


TRACE = _Off()
