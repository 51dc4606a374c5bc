"""The probe reader: attach to a traced process by pid and follow its tracepoint records.

Attaching is opening ``/dev/shm/coroscope-<pid>.probe`` read-only and mapping it. From then on
every read is a load from our own mapping of the same pages the target writes: the target is
never signalled, stopped, ptraced, or made to do a syscall, and takes no lock a reader holds.
The only other things read are ``/proc/<pid>/stat`` (the process start time, to tell a live file
from one a crashed process left behind with a pid since reused) and ``/proc/<pid>/task`` for
slots of threads that exited: kernel data about the target, not requests to it.

Following the ring: records carry consecutive sequence numbers. ``ProbeReader.poll`` reads from
the next expected one; one the writer already overwrote is counted in ``lost`` (exactly: one by
one, see ``runtime.probefile.read_record``) and skipped; one caught mid-write is retried and
never returned torn.
"""
from __future__ import annotations

import mmap
import os
import time

from runtime import probefile as pf

from .errors import CoroscopeError, TargetGone
from .model.probe import FdOrigin, ProbeRecord, ProbeSnapshot, ThreadSlot

_REC_NAMES = {int(k): k.name.lower() for k in pf.Rec}
_FIELD_INDEX = {"a": 7, "b": 8, "c": 9, "d": 10, "e": 11, "f": 12}


class StaleProbeFile(CoroscopeError):
    """The probe file belongs to a process that is gone (its pid may have been reused)."""


def _map_readonly(path: str) -> mmap.mmap:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size < pf.HEADER_SIZE:
            raise CoroscopeError(f"{path} is not a probe file (only {size} bytes)")
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)


def is_stale(header: pf.Header) -> bool:
    """True when the process that wrote ``header`` no longer exists (pid gone or reused)."""
    ticks = pf.process_start_ticks(header.pid)
    return ticks is None or (header.start_ticks != 0 and ticks != header.start_ticks)


class ProbeReader:
    """A read-only view of one traced process's probe file, and a cursor into its ring."""

    def __init__(self, mm: mmap.mmap, path: str, pid: int):
        self.mm = mm
        self.path = path
        self.pid = pid
        self.header = pf.parse_header(mm)
        self.layout = self.header.layout
        self.next_seq = 1
        self.lost = 0
        self.target_gone = False       # set by follow() when the process died without closing
        self._strings: dict[int, str] = {}

    # ------------------------------------------------------------------------------ attaching
    @classmethod
    def attach(cls, pid: int, *, from_start: bool = True) -> "ProbeReader":
        """Attach to process ``pid``. ``from_start``: begin at the oldest record still in the
        ring (else at the newest, to follow only what comes next)."""
        path = pf.probe_path(pid)
        alive = os.path.exists(f"/proc/{pid}")
        try:
            mm = _map_readonly(path)
        except FileNotFoundError:
            if not alive:
                raise CoroscopeError(f"no process with pid {pid}") from None
            raise CoroscopeError(f"pid {pid} publishes no probe file ({path}); start it with "
                                 "COROSCOPE_TRACE=1 or call runtime.tracing.enable()") from None
        except PermissionError:
            raise CoroscopeError(f"no permission to read {path}") from None
        try:
            reader = cls(mm, path, pid)
        except pf.ProbeFormatError as exc:
            mm.close()
            raise CoroscopeError(f"{path}: {exc}") from None
        if reader.header.pid != pid or is_stale(reader.header):
            mm.close()
            why = "that process is gone" if not alive else f"pid {pid} is now another process"
            raise StaleProbeFile(f"{path} is stale: left by an earlier process ({why}); ignoring it")
        reader.seek(oldest=from_start)
        return reader

    @classmethod
    def open_file(cls, path: str) -> "ProbeReader":
        """Read a probe file by path (a copy, or one whose writer is gone), without pid checks."""
        try:
            mm = _map_readonly(path)
        except FileNotFoundError:
            raise CoroscopeError(f"no such file: {path}") from None
        try:
            reader = cls(mm, path, 0)
        except pf.ProbeFormatError as exc:
            mm.close()
            raise CoroscopeError(f"{path}: {exc}") from None
        reader.pid = reader.header.pid
        reader.seek(oldest=True)
        return reader

    def close(self) -> None:
        try:
            self.mm.close()
        except (BufferError, ValueError):
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------------------------- ring
    def newest_seq(self) -> int:
        """The highest sequence number in the ring now (0: no record yet). Scans every entry."""
        seq_end, off, newest = pf.SEQ.unpack_from, self.layout.ring_off, 0
        for i in range(self.layout.ring_records):
            s = seq_end(self.mm, off + i * pf.RECORD_SIZE + pf.RECORD_SEQ_END)[0]
            if s > newest:
                newest = s
        return newest

    def seek(self, oldest: bool = True) -> None:
        newest = self.newest_seq()
        if oldest:
            self.next_seq = max(1, newest - self.layout.ring_records + 1)
        else:
            self.next_seq = newest + 1

    def poll_raw(self, limit: int = 1 << 20) -> list[tuple]:
        """Every record available now, in order, as tuples (``pf.RECORD_FIELD_NAMES``); records
        overwritten before we got to them are counted in ``self.lost``."""
        out: list[tuple] = []
        read, mm, layout = pf.read_record, self.mm, self.layout
        torn_retries = 0
        while len(out) < limit:
            status, rec = read(mm, layout, self.next_seq)
            if status == pf.READ_OK:
                out.append(rec)
                self.next_seq += 1
            elif status == pf.READ_LOST:
                self.lost += 1
                self.next_seq += 1
            elif status == pf.READ_TORN and torn_retries < 100:
                torn_retries += 1             # the writer is storing it right now
            else:
                break
        return out

    def poll(self, limit: int = 1 << 20) -> list[ProbeRecord]:
        return [self.decode(r) for r in self.poll_raw(limit)]

    def follow(self, *, interval: float = 0.05, duration: float | None = None, stop=None):
        """Yield records as they come, until ``duration`` passes, ``stop()`` is true, or the
        writer closes the file (then the rest is drained)."""
        deadline = None if duration is None else time.monotonic() + duration
        idle = 0
        while True:
            batch = self.poll()
            yield from batch
            if not batch:
                idle += 1
                if self.writer_closed() or (stop is not None and stop()):
                    yield from self.poll()
                    return
                if self.pid and idle % 20 == 0 and is_stale(self.header):
                    self.target_gone = True          # killed: it never closed the file
                    yield from self.poll()
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    return
                time.sleep(interval)

    def writer_closed(self) -> bool:
        return pf.SEQ.unpack_from(self.mm, pf.STATE_OFFSET)[0] == pf.STATE_CLOSED

    # ------------------------------------------------------------------------------- decoding
    def string(self, sid: int) -> str:
        s = self._strings.get(sid)
        if s is None:
            s = self._strings[sid] = pf.read_string(self.mm, self.layout, sid)
        return s

    def decode(self, rec: tuple) -> ProbeRecord:
        kind = rec[1]
        fields: dict[str, int | str] = {}
        for slot_name, meaning in pf.RECORD_FIELDS.get(kind, {}).items():
            value = rec[3] if slot_name == "aux" else rec[_FIELD_INDEX[slot_name]]
            if meaning.startswith("sid:"):
                fields[meaning[4:]] = self.string(value)
            else:
                fields[meaning] = value
        if kind in (pf.Rec.FD_OPEN, pf.Rec.FD_CLOSE):
            fields["fd_kind"] = pf.FD_KINDS[fields["fd_kind"]] if 0 <= fields["fd_kind"] < len(pf.FD_KINDS) else "other"
        elif kind == pf.Rec.TASK_CREATE and not fields["name"]:
            fields["name"] = f"Task-{fields['default_name_number']}"
        elif kind == pf.Rec.TASK_DONE:
            fields["outcome"] = pf.OUTCOMES[fields["outcome"]] if fields["outcome"] < 3 else "?"
        elif kind == pf.Rec.STEP_BEGIN:
            wake = fields["wake"]
            fields["wake"] = pf.WAKES[wake] if 0 <= wake < len(pf.WAKES) else "unknown"
        return ProbeRecord(seq=rec[0], kind=_REC_NAMES.get(kind, f"kind{kind}"), ns=rec[4],
                           thread=None if rec[2] == pf.NO_THREAD else rec[2], task=rec[5],
                           request=rec[6], fields=fields)

    # ------------------------------------------------------------------------ live structures
    def counters(self) -> dict[str, int]:
        return pf.read_counters(self.mm, self.layout)

    def threads(self) -> list[ThreadSlot]:
        now = time.monotonic_ns()
        return [ThreadSlot(index=i, tid=tid, task=task, request=req,
                           step_running_ns=(now - start) if start else 0)
                for i, tid, task, req, start, _ident, _steps in pf.read_slots(self.mm, self.layout)]

    def fd_origin(self, fd: int) -> FdOrigin | None:
        """Who opened ``fd``, if the traced code opened it and it is still open."""
        entry = pf.read_fd_entry(self.mm, self.layout, fd)
        if entry is None or entry[2] != 1:
            return None
        _ver, kind, _state, gen, task, req, sid, _ns = entry
        return FdOrigin(fd=fd, kind=pf.FD_KINDS[kind] if kind < len(pf.FD_KINDS) else "other",
                        generation=gen, task=task, request=req, stack=self.string(sid))

    def open_fds(self, fds=None) -> list[FdOrigin]:
        """Origins of the given fds (default: the fds the process has open now, from
        /proc/PID/fd; the table is not scanned whole, its untouched pages are never mapped)."""
        if fds is None:
            try:
                fds = sorted(int(n) for n in os.listdir(f"/proc/{self.pid}/fd"))
            except (OSError, ValueError):
                fds = []
        out = []
        for fd in fds:
            origin = self.fd_origin(fd)
            if origin is not None:
                out.append(origin)
        return out

    def snapshot(self, records: list[ProbeRecord] | None = None) -> ProbeSnapshot:
        if self.pid and not self.writer_closed() and is_stale(self.header):
            raise TargetGone(f"process {self.pid} exited")
        return ProbeSnapshot(pid=self.pid, path=self.path, version=self.header.version,
                             loop_kind=self.header.loop_kind, live=not self.writer_closed(),
                             counters=self.counters(), threads=self.threads(),
                             open_fds=self.open_fds(), records=records or [],
                             records_lost=self.lost)


def remove_stale_files(directory: str = pf.PROBE_DIR) -> list[str]:
    """Remove probe files whose process is gone (left by a crash or a kill). Returns them."""
    removed = []
    for name in sorted(os.listdir(directory)):
        if not (name.startswith("coroscope-") and name.endswith(".probe")):
            continue
        path = os.path.join(directory, name)
        try:
            mm = _map_readonly(path)
        except (OSError, CoroscopeError):
            continue
        try:
            stale = is_stale(pf.parse_header(mm))
        except pf.ProbeFormatError:
            stale = False                 # not ours to judge
        finally:
            mm.close()
        if stale:
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def attach(pid: int, *, from_start: bool = True) -> ProbeReader:
    return ProbeReader.attach(pid, from_start=from_start)
