"""Which implementation of the hot paths runs: the C accelerator or the pure-Python one.

This is the one place that decides. ``runtime/_speedups.c`` holds C versions of the two paths
every callback goes through, ``call_soon`` (building the ready handle) and the run loop of
``_run_once`` (popping and running the ready handles); ``runtime/loop.py`` holds the Python
versions, which are the reference: both do the same thing, field for field, and the test suite
and CPython's asyncio tests run on both.

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


def choose(pure_call_soon, pure_run_ready):
    """(call_soon, run_ready) to use: the C ones when the accelerator is chosen, else the given
    Python ones. The C call_soon is an instancemethod, so a class attribute binds it as a method."""
    if _speedups is None:
        return pure_call_soon, pure_run_ready
    _speedups.setup(_events.Handle, _events.TimerHandle, pure_call_soon)
    return _speedups.call_soon_method, _speedups.run_ready
