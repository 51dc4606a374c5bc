"""Which processes of a service do the work: a pre-fork master and its workers.

gunicorn (with uvicorn's or aiohttp's worker), ``uvicorn --workers N`` and hypercorn all start a
master that serves nothing and workers that serve everything; the master replaces a worker that
dies or is recycled (``--max-requests``). A user knows the master's pid (it is the one in the
pid file, the one systemd started), so every command that takes ``--pid`` takes the master's
and finds the workers under it. The start-up hook traces every Python process of the
environment, so each worker publishes its own probe; the master publishes one too, but its
loop never runs.

The rule: when processes under PID publish probes, the service's workers are those of them that
have run a task or a loop iteration (a worker still starting and multiprocessing's resource
tracker have not), or all of them when none has yet; PID itself is one of them only if it has
begun requests of its own (gunicorn's master runs a loop for its control socket, and serves
nothing). With no traced process under it, PID is the service. ``--worker W`` picks one. Everything here reads /proc and the probes' counters: nothing is asked of the target.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import CoroscopeError

MAX_PROCESSES = 256      # a process tree larger than this is not a service's workers


@dataclass
class Workers:
    master: int
    pids: list[int]            # the processes that serve, oldest first
    note: str = ""             # one line for the report, when PID is not the one that serves

    @property
    def pre_fork(self) -> bool:
        return self.pids != [self.master]


def _has_no_children(pid: int) -> bool:
    """True when the kernel lists no child of any thread of pid (/proc/PID/task/TID/children):
    then there is nothing to search, and psutil is not even imported (it was a tenth of what
    `coroscope bt PID` cost besides the read)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
        for tid in tids:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                if f.read().strip():
                    return False
    except OSError:          # gone, or a kernel without the file: let psutil say
        return False
    return bool(tids)


def descendants(pid: int) -> list[int]:
    """Every process under ``pid``, oldest first (bounded)."""
    if _has_no_children(pid):
        return []
    import psutil
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        raise CoroscopeError(f"no process with pid {pid}") from None
    except psutil.AccessDenied:
        return []
    alive = []
    for child in children[:MAX_PROCESSES]:
        try:
            alive.append((child.create_time(), child.pid))
        except psutil.Error:
            continue
    return [p for _, p in sorted(alive)]


def _activity(pid: int) -> tuple[bool, bool] | None:
    """(has run a task or a loop iteration, has begun a request) from pid's probe counters;
    None when it has no probe we can read."""
    from .probe import attach
    try:
        reader = attach(pid, from_start=False)
    except Exception:  # noqa: BLE001 - no probe, a stale one, no permission: not a traced worker
        return None
    try:
        c = reader.counters()
        return bool(c.get("tasks_created") or c.get("loop_iterations")), bool(c.get("requests_begun"))
    finally:
        reader.close()


def traced_below(pid: int) -> list[int]:
    """The processes under pid that publish a probe."""
    return [p for p in descendants(pid) if _activity(p) is not None]


def find(pid: int, worker: int | None = None) -> Workers:
    """The processes of the service whose master (or only process) is ``pid``."""
    tree = [pid, *descendants(pid)]
    if worker is not None:
        if worker not in tree:
            raise CoroscopeError(f"pid {worker} is not pid {pid} or one of its child processes")
        return Workers(pid, [worker], f"worker {worker} of pid {pid}" if worker != pid else "")
    below = {p: _activity(p) for p in tree[1:]}
    traced = [p for p in tree[1:] if below[p] is not None]
    if not traced:
        return Workers(pid, [pid])
    # a master may run a loop of its own (gunicorn's control socket) without serving requests
    pids = [p for p in traced if below[p][0]] or traced
    own = _activity(pid)
    if own is not None and own[1]:
        pids = [pid, *pids]
    others = [p for p in pids if p != pid]
    note = (f"pid {pid} serves through {len(others)} worker process"
            f"{'es' if len(others) != 1 else ''}: {', '.join(map(str, others))}")
    return Workers(pid, pids, note)


def one(pid: int, worker: int | None = None) -> tuple[int, str]:
    """The one process a single-process command (syscalls, bt, flame's sampler) measures for
    ``--pid PID [--worker W]``: W, or PID, or PID's first serving worker; and a note (for
    stderr) naming the other workers and how to pick one, when there are others."""
    found = find(pid, worker)
    chosen = found.pids[0]
    if not found.pre_fork or worker is not None:
        return chosen, ""
    others = [p for p in found.pids if p != chosen]
    note = f"{found.note}; measuring worker {chosen}"
    if others:
        note += f" (--worker {others[0]} for another)"
    return chosen, note
