"""The probe reader: attach to a traced process by pid and follow its tracepoint records.

Attaching is opening the target's probe region (an anonymous memfd, found among its open fds in
/proc/<pid>/fd: see ``runtime.probefile``, "Where the region lives") read-only and mapping it,
which the kernel allows exactly when ptrace could read the process. From then on
every read is a load from our own mapping of the same pages the target writes: the target is
never signalled, stopped, ptraced, or made to do a syscall, and takes no lock a reader holds.
The only other things read are ``/proc/<pid>/stat`` (the process start time, to tell a live file
from one a crashed process left behind with a pid since reused) and ``/proc/<pid>/task`` for
slots of threads that exited: kernel data about the target, not requests to it.

Following the ring: records carry consecutive sequence numbers. ``ProbeReader.poll`` reads from
the next expected one; one the writer already overwrote is counted in ``lost`` (exactly: one by
one, see ``runtime.probefile.read_record``) and skipped; one caught mid-write is retried and
never returned torn.

Why the ring is read a span at a time
-------------------------------------
A loaded target writes a hundred thousand records a second and the reader shares the machine
with it, so a Python call per record (``read_record``: three loads and a compare, some 2 us)
is CPU taken from the target. ``poll_raw`` instead takes the longest run of entries that does
not wrap, in three C-speed passes, and applies the seqlock rule to all of them at once:

    1. the seq_end words of the run (one strided ``memoryview`` slice, ``tolist``);
    2. a copy of the run's bytes (one ``mmap`` slice), decoded by ``struct.iter_unpack``;
    3. the seq_begin words of the run, again straight from the mapping.

A record is accepted when its seq_end in pass 1 and its seq_begin in pass 3 both equal the
sequence number its entry should hold. That is ``read_record``'s rule with the record copy in
the middle: x86 keeps loads in program order, the writer stores seq_end last (so pass 1 seeing
it means pass 2 sees the whole record) and zero-fills seq_begin first (so a later writer whose
store pass 2 caught has changed seq_begin before pass 3 loads it). Comparing each pass with the
expected run (``list == list``) is a C loop; only the entry where the run stops (not written
yet, overwritten, or mid-write) goes through ``read_record``, and a run of overwritten entries
is counted lost in one step. Every record still comes back in order or is counted lost.

``skip`` is the same three passes without the decoding: it moves the cursor over records the
caller has no time for, returning only those whose kind it asks for (found by a regex over
the kind bytes of the copy), and counts the rest ``skipped``, or ``lost`` if the writer had
already overwritten them. ``lost`` + ``skipped`` + records returned is every sequence number
the cursor passed.
"""
from __future__ import annotations

import mmap
import operator
import os
import time
from itertools import compress, count

from runtime import probefile as pf

from .errors import CoroscopeError, TargetGone
from .model.probe import FdOrigin, ProbeRecord, ProbeSnapshot, ThreadSlot

_REC_NAMES = {int(k): k.name.lower() for k in pf.Rec}
_FIELD_INDEX = {"a": 7, "b": 8, "c": 9, "d": 10, "e": 11, "f": 12}

# Entries read past the writer's ``records_written`` counter, which it refreshes once per loop
# iteration: enough for the records of one iteration.
LOOKAHEAD = 1024

_WORDS = pf.RECORD_SIZE // 8            # 8-byte words per record: seq_begin is word 0
_SEQ_END_WORD = pf.RECORD_SEQ_END // 8  # and seq_end the last
_KIND_HALF = 4                          # the kind is the u16 at byte 8: half-word 4 of a record
_HALVES = pf.RECORD_SIZE // 2
assert pf.RECORD_FMT.startswith("<QH")


def _first_mismatch(values: list, expected) -> int:
    """Index of the first ``values[i] != expected[i]`` (len(values) if none), at C speed."""
    return next(compress(count(), map(operator.ne, values, expected)), len(values))


def _first_not_reused(ends: list, begins: list, expected: list) -> int:
    """Index of the first entry that neither pass saw holding a later lap's record: the length
    of the run of entries the writer has already reused."""
    reused = map(operator.or_, map(operator.gt, ends, expected), map(operator.gt, begins, expected))
    return next(compress(count(), map(operator.not_, reused)), len(ends))


def kind_table(kinds) -> bytes:
    """A ``bytes.translate`` table that maps each of ``kinds`` (record kinds, all < 256) to 1
    and every other byte to 0: what ``skip`` is told to keep."""
    table = bytearray(256)
    for kind in kinds:
        table[int(kind)] = 1
    return bytes(table)


class StaleProbeFile(CoroscopeError):
    """The probe file belongs to a process that is gone (its pid may have been reused)."""


def map_region(pid: int) -> tuple[mmap.mmap, str]:
    """Map process ``pid``'s probe region read-only: (mapping, the path it was opened by). One
    clear CoroscopeError when there is no such process, no region, or no permission."""
    alive = os.path.exists(f"/proc/{pid}")
    if not alive:
        raise CoroscopeError(f"no process with pid {pid}")
    try:
        paths = pf.region_paths(pid)
    except PermissionError:
        raise CoroscopeError(f"no permission to read pid {pid}'s probe region (it is private to "
                             "its user: run as that user or as root)") from None
    except FileNotFoundError:
        raise CoroscopeError(f"no process with pid {pid}") from None
    if not paths:
        raise CoroscopeError(f"pid {pid} publishes no probe region; start it with "
                             "COROSCOPE_TRACE=1 or call runtime.tracing.enable()")
    for i, path in enumerate(paths):
        try:
            mm = _map_readonly(path)
        except PermissionError:
            raise CoroscopeError(f"no permission to read pid {pid}'s probe region") from None
        except (OSError, CoroscopeError):
            if i + 1 < len(paths):
                continue
            raise CoroscopeError(f"pid {pid}'s probe region went away as it was opened") from None
        try:
            header = pf.parse_header(mm)
        except pf.ProbeFormatError:
            if i + 1 < len(paths):
                mm.close()
                continue
            return mm, path                        # the caller says what is wrong with it
        if header.pid == pid or i + 1 == len(paths):
            return mm, path
        mm.close()                                 # a parent's region a fresh child still holds
    raise CoroscopeError(f"pid {pid} publishes no probe region")


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
        self.lost = 0                  # sequence numbers passed because they were overwritten
        self.skipped = 0               # sequence numbers passed unread on purpose (``skip``)
        self.target_gone = False       # set by follow() when the process died without closing
        self._strings: dict[int, str] = {}
        layout = self.layout
        self._records_written_off = layout.counters_off + 8 * pf.COUNTER_INDEX["records_written"]
        # The ring as 8-byte words, straight from the mapping: the seq passes read through it.
        self._ring_words = memoryview(mm)[
            layout.ring_off:layout.ring_off + layout.ring_records * pf.RECORD_SIZE].cast("Q")

    # ------------------------------------------------------------------------------ attaching
    @classmethod
    def attach(cls, pid: int, *, from_start: bool = True) -> "ProbeReader":
        """Attach to process ``pid``. ``from_start``: begin at the oldest record still in the
        ring (else at the newest, to follow only what comes next)."""
        mm, path = map_region(pid)
        try:
            reader = cls(mm, path, pid)
        except pf.ProbeFormatError as exc:
            mm.close()
            raise CoroscopeError(f"pid {pid}'s probe region: {exc}") from None
        if reader.header.pid != pid or is_stale(reader.header):
            reader.close()
            raise StaleProbeFile(f"pid {pid}'s probe region names another process "
                                 f"(pid {reader.header.pid}); ignoring it")
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
        self._ring_words.release()        # the mapping cannot close while a view holds it
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
        return max(self._ring_words[_SEQ_END_WORD::_WORDS].tolist())

    def seek(self, oldest: bool = True) -> None:
        newest = self.newest_seq()
        if oldest:
            self.next_seq = max(1, newest - self.layout.ring_records + 1)
        else:
            self.next_seq = newest + 1

    def _run(self, first: int, n: int) -> tuple[list[int], bytes, list[int]]:
        """The three passes over ``n`` entries from record ``first``'s (they must not wrap):
        seq_end words, then a copy of the bytes, then seq_begin words. See the module's essay."""
        w0 = ((first - 1) & (self.layout.ring_records - 1)) * _WORDS
        w1 = w0 + n * _WORDS
        words = self._ring_words
        ends = words[w0 + _SEQ_END_WORD:w1:_WORDS].tolist()
        off = self.layout.ring_off + w0 * 8
        data = self.mm[off:off + n * pf.RECORD_SIZE]
        begins = words[w0:w1:_WORDS].tolist()
        return ends, data, begins

    def _run_length(self, first: int, limit: int) -> int:
        """How many entries from record ``first``'s on can be read in one run: up to ``limit``
        and up to the ring's end."""
        ring = self.layout.ring_records
        return min(limit, ring - ((first - 1) & (ring - 1)))

    def poll_runs(self, limit: int = 1 << 20) -> list[tuple[int, bytes]]:
        """Every record available now (at most ``limit``), in order, as runs: (sequence number
        of the run's first record, the run's bytes, ``RECORD_SIZE`` per record, every one
        checked whole). Records overwritten before we got to them are counted in
        ``self.lost``. The module's essay says how a run is read and checked."""
        runs: list[tuple[int, bytes]] = []
        taken = 0
        torn_retries = 0
        size = pf.RECORD_SIZE
        while taken < limit:
            written = self.records_written()
            self._jump_lapped(written)
            first = self.next_seq
            # Only as far as the writer has got (its counter, plus what it wrote since the
            # counter's last refresh): copying stale entries ahead of the writer is waste.
            ahead = max(0, written - first + 1) + LOOKAHEAD
            n = self._run_length(first, min(limit - taken, ahead))
            ends, data, begins = self._run(first, n)
            expected = list(range(first, first + n))
            if ends == expected and begins == expected:
                gone, good = 0, n
            else:
                # Entries the writer has reused for a later lap (before or during our passes)
                # come first in the run: their records are lost. Then the good ones.
                gone = _first_not_reused(ends, begins, expected)
                good = min(_first_mismatch(ends[gone:], expected[gone:]),
                           _first_mismatch(begins[gone:], expected[gone:]))
            if gone:
                self.lost += gone
            if good:
                runs.append((first + gone, data if good == n else
                             data[gone * size:(gone + good) * size]))
                taken += good
            if gone or good:
                self.next_seq = first + gone + good
                continue
            # The run stops at its first entry: not written yet, or being written right now.
            status, rec = pf.read_record(self.mm, self.layout, first)
            if status == pf.READ_OK:          # finished between our passes
                runs.append((first, pf.RECORD_STRUCT.pack(*rec)))
                taken += 1
                self.next_seq = first + 1
            elif status == pf.READ_LOST:
                self.lost += 1
                self.next_seq = first + 1
            elif status == pf.READ_TORN and torn_retries < 100:
                torn_retries += 1             # the writer is storing it right now
            else:
                break
        return runs

    def poll_raw(self, limit: int = 1 << 20) -> list[tuple]:
        """Every record available now (at most ``limit``), in order, as tuples
        (``pf.RECORD_FIELD_NAMES``); records overwritten before we got to them are counted in
        ``self.lost``."""
        out: list[tuple] = []
        unpack = pf.RECORD_STRUCT.iter_unpack
        for _first, data in self.poll_runs(limit):
            out.extend(unpack(data))
        return out

    def skip(self, upto: int, wanted: bytes | None = None) -> list[tuple[int, bytes, list[int]]]:
        """Move the cursor to record ``upto`` without decoding what lies before it. Returns,
        per run read, (sequence number of the run's first entry, the run's bytes, the indices
        in it of the records whose kind ``wanted`` (a ``kind_table``) marks, each checked
        whole): the caller decodes those it wants with ``RECORD_STRUCT.unpack_from(bytes,
        index * RECORD_SIZE)``. The others count in ``self.skipped``, or in ``self.lost`` when
        the writer had overwritten them (or was writing them) by the time we looked. ``upto``
        must be at most the number of records written (the ``records_written`` counter is)."""
        out: list[tuple[int, bytes, list[int]]] = []
        self._jump_lapped(upto - 1)
        while self.next_seq < upto:
            first = self.next_seq
            n = self._run_length(first, upto - first)
            ends, data, begins = self._run(first, n)
            expected = list(range(first, first + n))
            if ends == expected and begins == expected:
                valid = n
            else:
                valid = sum(map(operator.and_, map(operator.eq, ends, expected),
                                map(operator.eq, begins, expected)))
            marked: list[int] = []
            if wanted is not None:
                kinds = memoryview(data).cast("H")[_KIND_HALF::_HALVES].tobytes()[::2]
                marked = list(compress(range(n), kinds.translate(wanted)))
                if valid < n:         # only the ones both passes saw whole
                    marked = [i for i in marked if ends[i] == begins[i] == first + i]
                if marked:
                    out.append((first, data, marked))
            self.skipped += valid - len(marked)
            self.lost += n - valid
            self.next_seq = first + n
        return out

    def _jump_lapped(self, written: int) -> None:
        """Count as lost, without reading them, the records a whole lap or more behind record
        ``written``: their entries hold newer records (or will before we could read them)."""
        oldest = written - self.layout.ring_records + 1
        if oldest > self.next_seq:
            self.lost += oldest - self.next_seq
            self.next_seq = oldest

    def records_written(self) -> int:
        """The writer's ``records_written`` counter: every record up to it has been handed out
        (it is refreshed once per loop iteration, so the writer may be a little further on)."""
        return pf.SEQ.unpack_from(self.mm, self._records_written_off)[0]

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
        elif kind == pf.Rec.LOOP_ITERATION:
            # the ready events the record holds itself, as (fd, events) pairs
            words = [fields.pop(name) for name in ("ready_1", "ready_2", "ready_3") if name in fields]
            fields["ready"] = pf.inline_ready_events(*words) if len(words) == 3 else []
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


def remove_stale_files(directory: str = pf.LEGACY_DIR) -> list[str]:
    """Remove named probe files (``coroscope-<pid>.probe``, what versions before 4 made in
    /dev/shm) whose process is gone, or that no version reads. Today's regions are memfds, which
    nothing can leave behind. Returns the paths removed."""
    removed = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return removed
    for name in names:
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
            # an older version's file: stale when the pid in its name is gone
            pid = name[len("coroscope-"):-len(".probe")]
            stale = not (pid.isdigit() and os.path.exists(f"/proc/{pid}"))
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
