"""Await mode on any running asyncio process: every pending task's chain, sampled from outside.

The in-process sampler (sampler.py, awaits.py) needs the target started under coroscope.  This
one needs nothing from the target: each sample is one ``diag.backtrace.reader`` snapshot
(process_vm_readv, the target never stops), and each pending task adds its await chain,
outermost frame first, ending in what it waits on, one count per task per sample, like the
in-process sampler's await mode; ``--by request`` roots each chain in the request its task
serves, read from the task's context (``runtime.requests.REQUEST_ID``, set by coroscope's
middlewares and automatic instrumentation).  Frames are labelled as that sampler labels them
(``name (file:line)``) so profiles from either source compare and diff.

A torn chain (changing on every re-read) is not counted as any stack: it is counted in the
profile's notes.  A sample that takes longer than the period is not made up for: the rate is
what was asked, the profile's duration and sample count say what was achieved.
"""
from __future__ import annotations

import os
import time

from diag.errors import CoroscopeError, TargetGone

LEAF = {"sleep": "[sleep]", "fd": "[fd]", "lock": "[lock]", "event": "[event]",
        "condition": "[condition]", "semaphore": "[semaphore]", "queue": "[queue]",
        "barrier": "[barrier]", "gather": "[gather]", "taskgroup": "[taskgroup]",
        "thread": "[thread]", "future": "[future]", "ready": "[ready]", "running": "[running]",
        "object": "[object]"}


def label(frame: dict) -> str:
    name = (frame.get("function") or "?").rsplit(".", 1)[-1]
    return f"{name} ({frame.get('file', '?')}:{frame.get('line') or 0})"


def chain_of(task: dict) -> tuple[str, ...]:
    out = [label(f) for f in task["frames"]]
    aw = task.get("awaiting", {})
    kind = aw.get("kind", "unknown")
    if kind == "task":
        out.append(f"[task: {aw.get('task_name', '')}]")
    elif kind != "running":
        out.append(LEAF.get(kind, f"[{kind}]"))
    return tuple(out)


def sample(pid: int, duration: float, rate: float, by: str | None) -> dict:
    """{"stacks": {stack: count}, "samples": n, "elapsed": s, "torn": n, "gone": bool}."""
    from diag.backtrace.reader import Reader
    reader = Reader(pid)
    stacks: dict[tuple[str, ...], float] = {}
    period = 1.0 / rate
    samples = torn = 0
    gone = False
    start = time.monotonic()
    try:
        proc = reader.process()
        if not proc.asyncio_module:
            raise CoroscopeError(f"pid {pid} has not imported asyncio: no tasks to sample")
        next_at = start
        while time.monotonic() - start < duration:
            try:
                doc = reader.document()
            except TargetGone:
                gone = True
                break
            samples += 1
            torn += doc["torn"]
            for task in doc["tasks"]:
                if task["state"] not in ("pending", "cancelling", "running"):
                    continue
                root = ()
                if by == "task":
                    root = (f"[task: {task['name']}]",)
                elif by == "request":       # as the in-process sampler roots them: by id
                    root = (f"[request: {task['request']}]" if task.get("request") else "[no request]",)
                key = root + chain_of(task)
                stacks[key] = stacks.get(key, 0.0) + 1
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()
    finally:
        reader.close()
    if not os.path.exists(f"/proc/{pid}"):
        gone = True
    return {"stacks": stacks, "samples": samples, "elapsed": time.monotonic() - start,
            "torn": torn, "gone": gone}
