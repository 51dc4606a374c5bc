"""From raw stacks to the profile a person reads: loop machinery folded, roots by task or request.

In an asyncio server every thread stack starts with the same dozen frames: ``asyncio.run``,
``run_until_complete``, ``run_forever``, ``_run_once``, ``Handle._run``, ``Task.__step``... and
an idle loop's samples end in ``select``/``epoll.poll``. They are real, but they are the loop,
not the program, and they push the program's frames off the top of a flame graph. So the first
contiguous run of loop-machinery frames becomes one ``[event loop]`` frame (kept when
``--keep-loop-frames``); frames the program calls back into (a coroutine's step) stay above it.
A stack that ends inside the machinery (waiting in epoll) ends in ``[event loop]``.

Which files are "the loop" is a table of path fragments below, covering stock asyncio, uvloop
and coroscope's own runtime.

Roots: with ``--by task`` every stack is prefixed with ``[task: NAME]`` (the task the thread
was stepping, or the task whose await chain it is); with ``--by request`` with
``[request: ID]``. Stacks with no task/request get ``[no task]``/``[no request]``.
"""
from __future__ import annotations

import os
import re

from diag.model.flame import FlameProfile, StackCount, split_frame

from .sampler import NONE, SamplerData

LOOP_FRAME = "[event loop]"
_THREAD_FRAME = re.compile(r"^thread \((?P<tid>\d+)\)(?:: (?P<name>.+))?$")

# Path fragments of files whose frames are the event loop's machinery.
_LOOP_FILES = (
    f"{os.sep}asyncio{os.sep}base_events.py",
    f"{os.sep}asyncio{os.sep}events.py",
    f"{os.sep}asyncio{os.sep}runners.py",
    f"{os.sep}asyncio{os.sep}selector_events.py",
    f"{os.sep}asyncio{os.sep}unix_events.py",
    f"{os.sep}asyncio{os.sep}proactor_events.py",
    f"{os.sep}asyncio{os.sep}tasks.py",
    f"{os.sep}asyncio{os.sep}futures.py",
    f"{os.sep}selectors.py",
    f"{os.sep}uvloop{os.sep}",
    f"{os.sep}runtime{os.sep}loop.py",
    f"{os.sep}runtime{os.sep}poller.py",
    f"{os.sep}runtime{os.sep}transports.py",
    f"{os.sep}runtime{os.sep}tracing.py",
    f"{os.sep}runtime{os.sep}sinks.py",
    f"{os.sep}diag{os.sep}instrument.py",      # tracepoints wrapped around stock loops
    f"{os.sep}contextvars",
)
# py-spy shortens paths unless --full-filenames; these match its short forms too.
_LOOP_SHORT = ("asyncio/", "selectors.py", "uvloop/")


def is_loop_frame(frame: str) -> bool:
    name, path, _ = split_frame(frame)
    if name == "<module>":          # importing asyncio is the program's start-up, not the loop
        return False
    if path is None:
        return name in ("select", "poll", "epoll.poll") or frame == LOOP_FRAME
    if any(fragment in path for fragment in _LOOP_FILES):
        return True
    return not os.path.isabs(path) and path.startswith(_LOOP_SHORT)


def fold_loop_frames(stack: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Replace the first contiguous run of loop frames with one ``[event loop]`` frame."""
    out: list[str] = []
    i, n = 0, len(stack)
    while i < n and not is_loop_frame(stack[i]):
        out.append(stack[i])
        i += 1
    if i == n:
        return tuple(out)
    out.append(LOOP_FRAME)
    while i < n and is_loop_frame(stack[i]):
        i += 1
    out.extend(stack[i:])
    return tuple(out)


def _root(by: str | None, task: str, request: str) -> tuple[str, ...]:
    if by == "task":
        return (f"[task: {task}]" if task != NONE else "[no task]",)
    if by == "request":
        return (f"[request: {request}]" if request != NONE else "[no request]",)
    return ()


def _labels(task: str, request: str) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in (("task", task), ("request", request)) if v != NONE)


def thread_label(frame: str, names: dict[str, str] | None = None) -> str | None:
    """The thread a py-spy ``--threads`` root frame names (``thread (TID)`` or ``thread (TID):
    NAME``): its name when py-spy knows one (here or, ``names``, in another of its frames: it
    does not always read it), else its kernel tid; None for any other frame."""
    m = _THREAD_FRAME.match(frame)
    if not m:
        return None
    return m.group("name") or (names or {}).get(m.group("tid")) or m.group("tid")


def profile_from_sampler(data: SamplerData, mode: str, by: str | None = None,
                         keep_loop_frames: bool = False, target: str = "") -> FlameProfile:
    """Build the profile for ``mode`` from an in-process sampler snapshot.

    cpu: thread stacks weighted by CPU microseconds; wall: thread stacks, one per sample;
    await: task await chains, one per task per sample.
    """
    if mode == "await" and data.mode != "await":
        raise ValueError("the sampler ran without await mode (COROSCOPE_SAMPLER_MODE=await)")
    kind = "await" if mode == "await" else "thread"
    acc: dict[tuple[str, ...], float] = {}
    for (k, task, request, stack), (n, cpu_us) in data.counts.items():
        if k != kind or not stack:
            continue
        weight = cpu_us if mode == "cpu" else n
        if weight <= 0:
            continue
        if kind == "thread" and not keep_loop_frames:
            stack = fold_loop_frames(stack)
        key = (_labels(task, request), _root(by, task, request) + tuple(stack))
        acc[key] = acc.get(key, 0.0) + weight
    notes = []
    if by == "request" and all(r == NONE for (_k, _t, r, _s) in data.counts):
        notes.append("no request ids were published by the target (mark requests with "
                     "runtime.request(); stock asyncio programs have none)")
    return FlameProfile(
        mode=mode, backend="sampler", unit="microseconds" if mode == "cpu" else "samples",
        stacks=[StackCount(list(k), w, dict(labels)) for (labels, k), w in sorted(acc.items())],
        rate_hz=data.rate, duration_s=round(data.elapsed, 3), target=target, by=by,
        complete=data.final, notes=notes)


def profile_from_collapsed(stacks: dict[tuple[str, ...], float], mode: str, backend: str,
                           keep_loop_frames: bool = False, labels: dict | None = None,
                           unit: str = "samples", **kw) -> FlameProfile:
    """Build a profile from collapsed stacks (py-spy raw output, or a file). A root frame of
    py-spy's ``--threads`` becomes the stack's ``thread`` label; ``labels`` gives the labels
    of stacks read from a file that has them (pprof)."""
    acc: dict[tuple, float] = {}
    names = {m.group("tid"): m.group("name") for m in
             (_THREAD_FRAME.match(st[0]) for st in stacks if st) if m and m.group("name")}
    for stack, weight in stacks.items():
        if not stack or weight <= 0:
            continue
        stack_labels = dict(labels.get(stack, {})) if labels else {}
        thread = thread_label(stack[0], names)
        if thread is not None:
            stack_labels["thread"] = thread
            stack = stack[1:]
            if not stack:
                continue
        if not keep_loop_frames:
            stack = fold_loop_frames(stack)
        key = (tuple(sorted(stack_labels.items())), stack)
        acc[key] = acc.get(key, 0.0) + weight
    return FlameProfile(mode=mode, backend=backend, unit=unit,
                        stacks=[StackCount(list(k), w, dict(lab))
                                for (lab, k), w in sorted(acc.items())], **kw)
