"""Which implementation of the hot paths runs: the C accelerator or the pure-Python one.

This is the one place that decides. ``runtime/_speedups.c`` holds C versions of the paths
every callback goes through, ``call_soon`` / ``call_at`` / ``call_later`` (building the handle),
``get_debug`` and ``_timer_handle_cancelled`` (two of the four Python frames of a
``TimerHandle.cancel``) and the run loop of ``_run_once`` (popping and running the ready
handles); ``runtime/loop.py`` and asyncio hold the Python versions, which are the reference:
both do the same thing, field for field, and the test suite and CPython's asyncio tests run on
both. The C methods read the loop's attributes from ``Loop.__slots__`` at their offsets.

The C module is built by pip at install (setup.py) for whichever CPython installs it. It is
used when it imported and ``COROSCOPE_PURE_PYTHON`` is unset or empty; with that variable set to
anything else, or without a compiler at install time, the Python versions run. ``COMPILED`` says
which was chosen, and ``REASON`` why when it is not the accelerator (the benchmarks print it).

Debug mode always takes the Python path (the C ``call_soon`` hands it over), so asyncio's own
checks and source tracebacks are untouched.
"""
from __future__ import annotations

import os
from asyncio import events as _events

_speedups = None
if os.environ.get("COROSCOPE_PURE_PYTHON"):
    REASON = "COROSCOPE_PURE_PYTHON is set"
else:
    try:
        from . import _speedups
        REASON = ""
    except ImportError as exc:  # installed without a compiler: the Python paths
        REASON = f"runtime._speedups is not built ({exc})"

COMPILED = _speedups is not None


def choose(loop_class, run_ready, tracer):
    """Install the chosen call_soon, call_at, call_later, get_debug and _timer_handle_cancelled
    on ``loop_class`` and return the run_ready to use: the C ones when the accelerator is chosen;
    otherwise the class keeps its Python methods and ``run_ready`` (the Python one) is returned.
    The C methods are method descriptors of ``loop_class``, called as its Python methods are."""
    if _speedups is None:
        return run_ready
    import collections
    import heapq
    _speedups.setup(_events.Handle, _events.TimerHandle, loop_class.call_soon, loop_class.call_at,
                    loop_class.call_later, loop_class, tracer, heapq.heappush)
    _speedups.setup_loop(loop_class, collections.deque, loop_class.get_debug,
                         loop_class._timer_handle_cancelled)
    for name, method in _speedups.loop_methods(loop_class).items():
        setattr(loop_class, name, method)
    return _speedups.run_ready


def sequence_counter(start: int = 1):
    """The probe writer's record numbers: ``next()`` gives the next one. The C ``Sequence`` when
    the accelerator is chosen (the C writers take numbers from it without a call), else
    ``itertools.count``; both have the interface ``probefile.next_of`` reads."""
    if _speedups is None:
        import itertools
        return itertools.count(start)
    return _speedups.Sequence(start)


def traced_iteration(mm, record_size, ring_off, ring_records, counters_at, sequence, run_one,
                     slow_plain, request_var, task_types, slow_ns, iter_head, io_head):
    """The tracer's per-iteration tracepoint in C (``_speedups.trace_iteration``) set up to write
    into ``mm``, or None: the tracer's Python ``iteration`` runs. ``sequence`` is the writer's
    counter (``sequence_counter``). The C one holds the mapping until
    ``release_traced_iteration``."""
    if _speedups is None:
        return None
    _speedups.trace_setup(mm, record_size, ring_off, ring_records, counters_at, sequence, run_one,
                          slow_plain, request_var, tuple(task_types), slow_ns, iter_head, io_head)
    return _speedups.trace_iteration


def release_traced_iteration() -> None:
    if _speedups is not None:
        _speedups.trace_release()
