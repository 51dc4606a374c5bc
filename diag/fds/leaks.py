"""Leak checking: snapshots of what a process holds, and the cycle runner built on them.

Why it is built this way:

A leak is something that is there after a unit of work and was not there before, and that
keeps accumulating when the work repeats. So the checker compares *identities*, not only
counts: a snapshot holds each fd (number + link target), each live Python thread, each child
process and each pending asyncio task; ``new_items(before, after)`` is what appeared. The
cycle runner (``run_cycles``) works the way CPython's ``regrtest --huntrleaks`` does: warm-up
cycles first (caches, lazy imports, pools filling up), then a baseline, then N measured cycles
with a cheap count after each; a kind leaks when its new items are non-zero AND it still grew
in the second half of the measured cycles (one-time growth is not a leak). Before the final
snapshot is believed, it is retaken with a short exponential backoff, as Go's goleak does, so
that a thread that is exiting or a socket in the middle of closing does not make a false report.

Every leaked item carries the stack that opened it when ``fdtrack`` (fds, threads, processes,
tasks created through ``BaseEventLoop.create_task``) knew it; a pending task without a recorded
creation stack is charged to where its coroutine is suspended. Items whose kind or whose
stack matches an ignore filter are dropped before anything is decided.

The pytest plugin uses ``take_snapshot`` / ``settle`` / ``leaks_between`` directly; the
``coroscope leaks`` command runs ``run_cycles`` in a child process (``cycle_child``).
"""
from __future__ import annotations

import asyncio
import gc
import inspect
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from diag.model.fds import Frame, Leak, LeakReport, LeakSite, Origin

from . import fdtrack
from .inventory import SOCKET_KINDS, scan

FD_FAMILY_ALIASES = {"socket": SOCKET_KINDS, "fd": None}   # "fd" matches every fd kind
VERB = {"thread": "started at", "process": "started at", "task": "created at"}


@dataclass
class Item:
    """One resource found in a snapshot."""
    kind: str                          # fd kind, or "thread" / "process" / "task"
    key: tuple                         # identity within its kind across snapshots
    label: str                         # one line for humans: "fd 7 eventfd count=0", "thread worker-1"
    origin: Origin | None = None
    is_fd: bool = False


@dataclass
class Snapshot:
    items: dict[tuple, Item] = field(default_factory=dict)   # (kind, key) -> Item

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items.values():
            out[item.kind] = out.get(item.kind, 0) + 1
        return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# what a process holds


def child_pids() -> dict[int, str]:
    """Direct children of this process (any thread's), zombies included: pid -> command line."""
    pids: set[int] = set()
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/children") as f:
                    pids.update(int(p) for p in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    out = {}
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out[pid] = f.read().replace(b"\0", b" ").decode(errors="replace").strip() or "<zombie>"
        except OSError:
            out[pid] = "<exited>"
    return out


def pending_tasks() -> list[Any]:
    """Every asyncio task of this process, on any loop, that is not done."""
    from diag.flame.awaits import live_tasks     # where each CPython version keeps them
    return [t for t in live_tasks() if not t.done()]


def _task_origin(task) -> Origin | None:
    origin = fdtrack.task_origin(task)
    if origin is not None:
        return origin
    coro = task.get_coro()
    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    if frame is None:
        return None
    where = Frame(file=frame.f_code.co_filename, line=frame.f_lineno, function=frame.f_code.co_name)
    return Origin(stack=[where], site=where, task=task.get_name(), source="suspended")


def take_snapshot(*, fds: bool = True, detail: bool = True) -> Snapshot:
    """What this process holds now. ``detail`` adds fdinfo/socket detail and opening stacks."""
    snap = Snapshot()
    if fds:
        inv = scan(detail=detail)
        if detail:
            fdtrack.attach(inv)
        for row in inv.rows:
            if row.fd <= 2:
                continue   # stdin/out/err: redirected by pytest's capture and shells, never a leak
            item = Item(kind=row.kind, key=(row.fd, row.target),
                        label=f"fd {row.fd} {row.kind} {row.detail}".rstrip(), origin=row.origin, is_fd=True)
            snap.items[(row.kind, item.key)] = item
    for thread in threading.enumerate():
        if thread.is_alive():
            item = Item(kind="thread", key=(thread.ident, thread.name), label=f"thread {thread.name!r}",
                        origin=fdtrack.thread_origin(thread) if detail else None)
            snap.items[("thread", item.key)] = item
    for pid, cmdline in child_pids().items():
        item = Item(kind="process", key=(pid,), label=f"process {pid} {cmdline[:80]}",
                    origin=fdtrack.process_origin(pid) if detail else None)
        snap.items[("process", item.key)] = item
    for task in pending_tasks():
        item = Item(kind="task", key=(id(task),), label=f"task {task.get_name()} {task.get_coro()!r}"[:160],
                    origin=_task_origin(task) if detail else None)
        snap.items[("task", item.key)] = item
    return snap


# ---------------------------------------------------------------------------------------------
# filters and comparison


@dataclass
class Filters:
    kinds: frozenset[str] = frozenset()      # kinds to ignore; "socket" = every socket kind, "fd" = every fd
    frames: tuple[str, ...] = ()             # substrings of "file:line in function"; an item whose stack has one is ignored

    def ignores(self, item: Item) -> bool:
        if item.kind in self.kinds or ("fd" in self.kinds and item.is_fd):
            return True
        if "socket" in self.kinds and item.kind in SOCKET_KINDS:
            return True
        if self.frames and item.origin is not None:
            for frame in item.origin.stack:
                text = str(frame)
                if any(pat in text for pat in self.frames):
                    return True
        return False


def new_items(before: Snapshot, after: Snapshot, filters: Filters | None = None) -> list[Item]:
    filters = filters or Filters()
    return [item for key, item in after.items.items()
            if key not in before.items and not filters.ignores(item)]


def settle(before: Snapshot, filters: Filters | None = None, timeout: float = 1.0,
           take: Callable[[], Snapshot] = take_snapshot) -> tuple[Snapshot, list[Item], int]:
    """Take a snapshot; while it shows new items, collect garbage and retake it with backoff.

    Returns (last snapshot, new items in it, retries made). goleak's idea: resources that are
    being released (a thread past its last line, a socket whose owner is being collected) get
    a moment before they are reported, and a real leak costs at most ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    retries = 0
    while True:
        snap = take()
        leaked = new_items(before, snap, filters)
        if not leaked or time.monotonic() >= deadline:
            return snap, leaked, retries
        gc.collect()
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.1)
        retries += 1


def _display_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def group_leaks(items: Iterable[Item], cycles: int = 1, totals: dict[str, int] | None = None) -> list[Leak]:
    """Group leaked items by kind, and within a kind by the site that opened them."""
    by_kind: dict[str, list[Item]] = {}
    for item in items:
        by_kind.setdefault(item.kind, []).append(item)
    leaks = []
    for kind, its in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        sites: dict[tuple, LeakSite] = {}
        for item in its:
            site = item.origin.site if item.origin is not None else None
            if site is None:
                continue
            key = (site.file, site.line, site.function)
            if key not in sites:
                sites[key] = LeakSite(file=_display_path(site.file), line=site.line, function=site.function,
                                      count=0, stack=[Frame(_display_path(f.file), f.line, f.function)
                                                      for f in item.origin.stack])
            sites[key].count += 1
        opened_at = sorted(sites.values(), key=lambda s: -s.count)
        total = len(its) if totals is None else max(totals.get(kind, len(its)), 0) or len(its)
        per_cycle = total / max(cycles, 1)
        amount = f"{per_cycle:g} {kind} per cycle" if cycles > 1 else f"{total} {kind} left behind"
        verb = VERB.get(kind, "opened at")
        if kind == "task" and all(i.origin is None or i.origin.source == "suspended" for i in its):
            verb = "suspended at"      # no creation stack (a loop whose create_task fdtrack cannot see)
        if opened_at:
            where = ", ".join(f"{s.file}:{s.line} in {s.function}" + (f" ({s.count})" if len(opened_at) > 1 else "")
                              for s in opened_at[:3])
            message = f"{amount}, {verb} {where}"
        else:
            message = f"{amount} (opening stack unknown: not opened through a tracked call)"
        leaks.append(Leak(kind=kind, per_cycle=per_cycle, total=total, opened_at=opened_at,
                          message=message, examples=[i.label for i in its[:5]]))
    return leaks


# ---------------------------------------------------------------------------------------------
# the cycle runner


def _caller(func: Callable | None, loop: asyncio.AbstractEventLoop | None) -> Callable[[], Any] | None:
    if func is None:
        return None
    if inspect.iscoroutinefunction(func):
        return lambda: loop.run_until_complete(func())
    def call():
        result = func()
        if inspect.isawaitable(result):
            return loop.run_until_complete(result)
        return result
    return call


def run_cycles(cycle: Callable[[], Any], *, cycles: int = 10, warmup: int = 2,
               setup: Callable | None = None, teardown: Callable | None = None,
               loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
               filters: Filters | None = None, retry_timeout: float = 1.0,
               target: str = "") -> LeakReport:
    """Run ``cycle`` (sync or async) ``warmup`` + ``cycles`` times in this process and report growth.

    An async cycle (or setup) runs on one event loop made by ``loop_factory`` before the
    baseline (default ``asyncio.new_event_loop``), so a task a cycle leaves pending stays
    pending and is seen. fd tracking is installed for the run so leaked fds carry stacks.
    """
    if cycles < 1:
        raise ValueError("cycles must be at least 1")
    started = time.perf_counter()
    was_tracking = fdtrack.installed()
    fdtrack.install()
    notices: list[str] = []
    needs_loop = any(inspect.iscoroutinefunction(f) for f in (cycle, setup, teardown) if f is not None)
    loop = (loop_factory or asyncio.new_event_loop)() if needs_loop or loop_factory else None
    try:
        run = _caller(cycle, loop)
        if setup is not None:
            _caller(setup, loop)()
        for _ in range(warmup):
            run()
        gc.collect()
        baseline = take_snapshot()
        base_counts = baseline.counts()
        samples: list[dict[str, int]] = []
        for _ in range(cycles):
            run()
            gc.collect()
            samples.append(take_snapshot(detail=False).counts())
        final, leaked, retries = settle(baseline, filters, timeout=retry_timeout)
        final_counts = final.counts()
        kinds = sorted(set(base_counts) | set(final_counts) | {k for s in samples for k in s})
        per_cycle = {k: (final_counts.get(k, 0) - base_counts.get(k, 0)) / cycles for k in kinds}
        half = samples[(cycles - 1) // 2] if cycles >= 2 else base_counts
        growing = {k for k in kinds if cycles < 2 or final_counts.get(k, 0) > half.get(k, 0)}
        kept = [i for i in leaked if i.kind in growing]
        totals = {k: final_counts.get(k, 0) - base_counts.get(k, 0) for k in kinds}
        leaks = group_leaks(kept, cycles, totals)
        dropped = {i.kind for i in leaked} - growing
        if dropped:
            notices.append("grew once but not in the second half (not reported as leaks): " + ", ".join(sorted(dropped)))
        if teardown is not None:
            _caller(teardown, loop)()
    finally:
        if loop is not None and not loop.is_closed():
            _cancel_leftovers(loop)
            loop.close()
        if not was_tracking:
            fdtrack.uninstall()
    return LeakReport(target=target, mode="cycle", cycles=cycles, warmup=warmup, baseline=base_counts,
                      samples=samples, per_cycle=per_cycle, leaks=leaks, notices=notices, retries=retries,
                      elapsed_s=time.perf_counter() - started)


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still pending on the runner's loop (after they were reported), as asyncio.run does."""
    left = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in left:
        task.cancel()
    if left:
        try:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        except Exception:
            pass
