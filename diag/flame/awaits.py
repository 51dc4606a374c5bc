"""Await mode: what every pending task is waiting on, read from another thread.

A suspended coroutine is not on any thread's stack, so a thread sampler never sees it. But
the coroutine objects are all reachable: asyncio keeps every task in a WeakSet, a task's
coroutine exposes its frame (``cr_frame``) and what it awaits (``cr_await``), and that is
again a coroutine (``await other()``), a generator (``yield from``) or, at the leaf, a future's
iterator. Walking that chain gives the task's "await stack", outermost first, like a goroutine
profile.

Reading from the sampler thread, which holds the GIL while it walks: objects are consistent
at bytecode granularity, but the WeakSet can change size between two bytecodes of our own
iteration (a task created or collected), so it is copied with retries, and a task that finishes
while we look is simply skipped.

Where asyncio keeps its bookkeeping is private and changes between CPython versions (3.12
keeps scheduled and eager tasks in two sets), so every such name lives in the one table below.
"""
from __future__ import annotations

import asyncio
import inspect
import sys

# CPython (major, minor) -> where asyncio keeps its tasks. 3.12 split the one WeakSet of every
# task in two: tasks scheduled on a loop (a WeakSet) and eager tasks still in their first step,
# run inside create_task (a plain set; asyncio.eager_task_factory), both in asyncio.tasks.
_ASYNCIO_LAYOUT = {
    (3, 11): {
        "all_tasks": [("asyncio.tasks", "_all_tasks")],         # WeakSet of every live task
        "current_tasks": ("asyncio.tasks", "_current_tasks"),  # dict loop -> running task
        "loop_thread": "_thread_id",                            # BaseEventLoop attribute
    },
    (3, 12): {
        "all_tasks": [("asyncio.tasks", "_scheduled_tasks"), ("asyncio.tasks", "_eager_tasks")],
        "current_tasks": ("asyncio.tasks", "_current_tasks"),
        "loop_thread": "_thread_id",
    },
}
_ASYNCIO_LAYOUT[(3, 13)] = _ASYNCIO_LAYOUT[(3, 12)]       # unchanged in 3.13

_COPY_RETRIES = 8


def _layout() -> dict:
    try:
        return _ASYNCIO_LAYOUT[sys.version_info[:2]]
    except KeyError:
        raise RuntimeError(f"await sampling supports CPython {sorted(_ASYNCIO_LAYOUT)}, "
                           f"not {sys.version_info[0]}.{sys.version_info[1]}") from None


def _lookup(where: tuple[str, str]):
    module = sys.modules.get(where[0])
    return None if module is None else getattr(module, where[1], None)


def live_tasks() -> list:
    """A copy of asyncio's sets of tasks; [] when asyncio was never imported."""
    out: list = []
    for where in _layout()["all_tasks"]:
        tasks = _lookup(where)
        if tasks is None:
            continue
        for _ in range(_COPY_RETRIES):
            try:
                out.extend(tasks)
                break
            except RuntimeError:      # "set changed size during iteration": try again
                continue
    return out


def current_task_by_thread() -> dict[int, object]:
    """thread ident -> the task its running loop is stepping right now."""
    layout = _layout()
    current = _lookup(layout["current_tasks"])
    if not current:
        return {}
    out = {}
    for _ in range(_COPY_RETRIES):
        try:
            items = list(current.items())
            break
        except RuntimeError:
            continue
    else:
        return {}
    for loop, task in items:
        ident = getattr(loop, layout["loop_thread"], None)
        if ident is not None:
            out[ident] = task
    return out


def _leaf_label(awaited) -> str:
    """A name for what a chain ends on when it is not a coroutine or generator."""
    if awaited is None:
        return "[running]"
    if isinstance(awaited, asyncio.Future):
        return "[future]" if not isinstance(awaited, asyncio.Task) else f"[task: {awaited.get_name()}]"
    name = type(awaited).__name__
    if name == "FutureIter":          # `await future`: the C future's iterator hides the future
        return "[future]"
    return f"[{name}]"


def chain_of(coro, labels) -> tuple[str, ...] | None:
    """The await chain of a coroutine, outermost first, or None when it has finished.

    ``labels(frame)`` names a frame (the sampler's cached labeller).
    """
    out: list[str] = []
    obj = coro
    for _ in range(256):              # a cycle is impossible in CPython, but stay bounded
        frame = getattr(obj, "cr_frame", None)
        awaited_attr = "cr_await"
        if frame is None and hasattr(obj, "gi_frame"):
            frame, awaited_attr = obj.gi_frame, "gi_yieldfrom"
        if frame is None and hasattr(obj, "ag_frame"):
            frame, awaited_attr = obj.ag_frame, "ag_await"
        if frame is None:
            if obj is coro:
                return None           # the task's coroutine has finished
            out.append(_leaf_label(obj))
            break
        out.append(labels(frame))
        awaited = getattr(obj, awaited_attr, None)
        if awaited is None:
            if awaited_attr == "cr_await" and inspect.getcoroutinestate(obj) == inspect.CORO_CREATED:
                out.append("[not started]")
            elif getattr(obj, "cr_running", False) or getattr(obj, "gi_running", False):
                out.append("[running]")
            else:
                out.append("[ready]")
            break
        obj = awaited
    return tuple(out)


def await_chains(labels):
    """Yield (task, chain) for every pending task of every loop in this process."""
    for task in live_tasks():
        try:
            if task.done():
                continue
            chain = chain_of(task.get_coro(), labels)
        except Exception:             # a task torn down while we looked
            continue
        if chain:
            yield task, chain
