"""Where snapshots come from: a live process (probe file + /proc + samplers) or a recording.

The dashboard asks a source for the newest snapshot once per refresh (``poll()``) and never
looks further; both sources below answer the same way, so a replay looks exactly like the
live run it recorded. A live source never raises once attached: when the target exits it
says so in the snapshot (``target.alive``, ``target.note``) and keeps what it has.
"""
from __future__ import annotations

import os
import time
from typing import Protocol

from diag.errors import CoroscopeError
from diag.model.live import LiveSnapshot, TargetInfo

from . import fdsample, recording
from .state import LiveState, same_kind


class EventReader(Protocol):
    """What a live source reads events from (the probe adapter, or a test's list)."""
    loop_kind: str               # "runtime" | "asyncio" | "uvloop" | "unknown"
    missing: dict[str, str]      # what this reader cannot provide, and why

    def read(self) -> list: ...  # the events published since the last call (may be [])
    def close(self) -> None: ...
    # Optional: ``read_into(state)`` folds what was published straight into a LiveState (the
    # probe adapter's fast path); a reader without it is read through ``read``.


class Source(Protocol):
    description: str
    ended: bool                  # nothing new will ever come (target gone, replay at its end)

    def poll(self) -> LiveSnapshot: ...
    def close(self) -> None: ...


def _command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return " ".join(p.decode(errors="replace") for p in f.read().split(b"\0") if p)
    except OSError:
        return ""


def _stat(pid: int) -> list[bytes] | None:
    """Fields 3.. of /proc/PID/stat (after the command name, which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True while the process exists, is not a zombie and, given its start time (field 22),
    is the same process and not a later one that got its pid. Reads /proc only."""
    fields = _stat(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return False
    return start_ticks is None or int(fields[22 - 3]) == start_ticks


MAX_ORIGIN_LOOKUPS = 4096     # per refresh: bounds the work when thousands of fds are open


class LiveSource:
    def __init__(self, pid: int, reader: EventReader, samplers: list | None = None,
                 clock=time.monotonic_ns):
        self.pid = pid
        self.reader = reader
        self.samplers = samplers or []     # objects with update(state) (hot paths, syscalls)
        self.clock = clock
        self.state = LiveState(TargetInfo(pid, _command_of(pid), reader.loop_kind),
                               source=f"probe file of pid {pid}")
        for what, why in reader.missing.items():
            self.state.set_missing(what, why)
        self.ended = False
        self.description = f"pid {pid}"
        fields = _stat(pid)
        self.start_ticks = int(fields[22 - 3]) if fields else None

    def pump(self) -> None:
        """Read what the ring holds now into the state, without a snapshot. Called between
        refreshes so a busy writer does not lap the reader (the ring holds a fraction of a
        second of a loaded target's records)."""
        if not self.ended:
            self._read()

    def _read(self, whole: bool = False) -> None:
        read_into = getattr(self.reader, "read_into", None)
        if read_into is not None:
            read_into(self.state, whole)
        else:
            self.state.apply_all(self.reader.read())

    def poll(self) -> LiveSnapshot:
        if not self.ended:
            self._read()
            try:
                sample = fdsample.sample(self.pid)
                self.state.add_fd_sample(sample, f"/proc/{self.pid}/fd")
                self._learn_fd_origins(sample)
            except ProcessLookupError:
                pass
            except PermissionError:
                self.state.set_missing("fds", f"no permission to read /proc/{self.pid}/fd")
            for sampler in self.samplers:
                sampler.update(self.state)
            self._follow_loop_kind()
            if not process_alive(self.pid, self.start_ticks):
                self.ended = True
                self._read(whole=True)                      # whatever it wrote last
                self.state.target.alive = False
                self.state.target.note = (f"target exited at {time.strftime('%H:%M:%S')}; "
                                          f"showing what was gathered")
                self.close()
        return self.state.snapshot(self.clock(), time.time())

    def _follow_loop_kind(self) -> None:
        current = getattr(self.reader, "current_loop_kind", None)
        if current is None:
            return
        before = self.state.target.loop
        try:
            kind = current()
        except (ValueError, OSError):
            return
        if kind != before:
            from .probe_adapter import _MISSING_BY_LOOP
            self.state.target.loop = kind
            for what in _MISSING_BY_LOOP.get(before, {}):
                self.state.missing.pop(what, None)
            for what, why in self.reader.missing.items():
                self.state.set_missing(what, why)

    def _learn_fd_origins(self, sample) -> None:
        """Origins of open fds whose open record we never read (opened before we attached, or
        lost when the ring wrapped), from the probe's fd table."""
        lookup = getattr(self.reader, "fd_origin", None)
        if lookup is None:
            return
        unknown = [fd for fd in sample.fds if fd not in self.state.fd_origin]
        for fd in unknown[:MAX_ORIGIN_LOOKUPS]:
            origin = lookup(fd)
            if origin is not None and same_kind(sample.fds[fd][0], origin.kind):
                self.state.learn_fd_origin(origin)

    def close(self) -> None:
        self.reader.close()
        for sampler in self.samplers:
            close = getattr(sampler, "close", None)
            if close:
                close()


class ReplaySource:
    """Steps through a recording, one snapshot per poll; pausing is the app's business."""

    def __init__(self, path: str | os.PathLike, allow_truncated: bool = False):
        self.snaps = recording.load(path, allow_truncated=allow_truncated)
        self.index = -1
        self.description = f"replay of {path}"
        self.ended = False

    def poll(self) -> LiveSnapshot:
        self.index = min(self.index + 1, len(self.snaps) - 1)
        self.ended = self.index == len(self.snaps) - 1
        return self.current()

    def step(self, delta: int) -> LiveSnapshot:
        self.index = max(0, min(len(self.snaps) - 1, self.index + delta))
        self.ended = self.index == len(self.snaps) - 1
        return self.current()

    def current(self) -> LiveSnapshot:
        snap = self.snaps[max(0, self.index)]
        snap.source = f"replay {max(0, self.index) + 1}/{len(self.snaps)}"
        return snap

    def close(self) -> None:
        pass


def attach(pid: int, syscalls: bool = False, cpu_share: float | None = None) -> LiveSource:
    """A live source on ``pid``; CoroscopeError (one line) when that cannot be. ``cpu_share``:
    the decoding budget, a share of one core (default: the dashboard's, see probe_adapter)."""
    if pid <= 0:
        raise CoroscopeError(f"{pid} is not a process id")
    if not os.path.exists(f"/proc/{pid}"):
        raise CoroscopeError(f"no process with pid {pid}")
    from .probe_adapter import DASHBOARD_CPU_SHARE, open_reader   # knows the probe reader
    reader = open_reader(pid, DASHBOARD_CPU_SHARE if cpu_share is None else cpu_share)
    from .samplers import default_samplers
    return LiveSource(pid, reader, default_samplers(pid, reader, syscalls=syscalls))


class WorkersSource:
    """A pre-fork service watched through its master's pid: one worker at a time (``w`` in the
    dashboard moves to the next), the worker list found again every few refreshes so a worker
    the master starts in place of one that died shows up (diag.workers says how workers are
    found). When the watched worker exits, the next live one is watched."""

    REDISCOVER_POLLS = 2

    def __init__(self, master: int, pids: list[int], make_source, note: str = ""):
        self.master = master
        self.pids = list(pids)
        self.make_source = make_source       # pid -> a LiveSource (attach)
        self.note = note
        self.index = 0
        self.current = make_source(self.pids[0])
        self._polls = 0
        self.ended = False
        self.description = self._describe()

    def _describe(self) -> str:
        return (f"pid {self.current.pid}, worker {self.index + 1} of {len(self.pids)} "
                f"of pid {self.master}")

    def _rediscover(self) -> None:
        from diag import workers
        try:
            found = workers.find(self.master).pids
        except CoroscopeError:               # the master is gone: keep the workers we know
            found = [p for p in self.pids if process_alive(p)]
        if found:
            self.pids = found
        if self.current.pid in self.pids:
            self.index = self.pids.index(self.current.pid)

    def _switch(self, index: int) -> None:
        if not self.pids:
            return
        index %= len(self.pids)
        try:
            source = self.make_source(self.pids[index])
        except CoroscopeError:
            return
        self.current.close()
        self.current, self.index = source, index
        self.description = self._describe()

    def next_worker(self) -> None:
        self._rediscover()
        self._switch(self.index + 1)

    def pump(self) -> None:
        self.current.pump()

    def poll(self) -> LiveSnapshot:
        self._polls += 1
        if self._polls % self.REDISCOVER_POLLS == 0 or self.current.ended:
            self._rediscover()
            if self.current.ended:
                live = [i for i, p in enumerate(self.pids) if p != self.current.pid]
                if live:
                    self._switch(live[-1])       # the newest: the one that replaced it
        snap = self.current.poll()
        self.ended = self.current.ended and not process_alive(self.master)
        workers = ", ".join(str(p) for p in self.pids)
        snap.source = self.description
        snap.target.note = "; ".join(filter(None, [
            snap.target.note, f"workers of pid {self.master}: {workers} (w: next worker)"]))
        return snap

    def close(self) -> None:
        self.current.close()


def attach_service(pid: int, worker: int | None = None, syscalls: bool = False):
    """``attach(pid)``, or a WorkersSource when pid is a pre-fork master (diag.workers)."""
    from diag import workers
    if pid <= 0:
        raise CoroscopeError(f"{pid} is not a process id")
    found = workers.find(pid, worker)
    if len(found.pids) == 1:
        return attach(found.pids[0], syscalls=syscalls)
    return WorkersSource(pid, found.pids, lambda p: attach(p, syscalls=syscalls), found.note)
