"""The target's probe file, as the syscall counter needs it: slot addresses, requests done, names.

The eBPF program needs, for each thread of the target, the address *in the target* of the id it
charges syscalls to. That is the base of the probe file's mapping (from /proc/PID/maps, by the
file's path) plus the slot's offset plus the field's offset (``runtime.probefile`` documents the
layout). We map the file read-only in our own process to learn which slot belongs to which
thread, and to read the requests-done counter and the request names from the ring. Everything
here reads memory or /proc; none of it makes the target do anything.
"""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field

from runtime import probefile as pf

from .counts import REQUEST, TASK


_RECORD_NAMES = ("seq", "kind", "thread", "aux", "ns", "task", "request", "a", "b", "c", "d", "e", "seq_end")


class NoProbeFile(Exception):
    """The process publishes no (live, current) probe file; the message says which case."""


def mapping_base(pid: int, path: str) -> int | None:
    """Start address of the first mapping of ``path`` in ``pid`` (offset 0), or None."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6:
                    mapped = parts[5].rstrip("\n")
                    if mapped.endswith(" (deleted)"):
                        mapped = mapped[: -len(" (deleted)")]
                    if mapped == path and int(parts[2], 16) == 0:
                        return int(parts[0].split("-")[0], 16)
    except OSError:
        return None
    return None


@dataclass
class ProbeView:
    """A read-only view of one process's probe file."""

    pid: int
    path: str
    mm: mmap.mmap
    header: pf.Header
    base: int                                   # where the target mapped the file
    next_seq: int = 1                           # next ring record to read for request names
    request_names: dict[int, str] = field(default_factory=dict)
    request_begun_ns: dict[int, int] = field(default_factory=dict)   # monotonic ns of its begin
    task_names: dict[int, str] = field(default_factory=dict)   # task id -> "name (coroutine)"
    records_lost: int = 0

    @classmethod
    def open(cls, pid: int) -> "ProbeView":
        path = pf.probe_path(pid)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise NoProbeFile(f"pid {pid} publishes no probe file ({path}): it does not run with COROSCOPE_TRACE=1")
        except OSError as exc:
            raise NoProbeFile(f"cannot open {path}: {exc.strerror}")
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise NoProbeFile(f"{path} is empty")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        try:
            header = pf.parse_header(mm)
        except pf.ProbeFormatError as exc:
            mm.close()
            raise NoProbeFile(f"{path}: {exc}")
        if header.pid != pid or (header.start_ticks and header.start_ticks != pf.process_start_ticks(pid)):
            mm.close()
            raise NoProbeFile(f"{path} is stale: left by an earlier process with pid {pid}")
        base = mapping_base(pid, path)
        if base is None:
            mm.close()
            raise NoProbeFile(f"pid {pid} does not map {path}")
        return cls(pid, path, mm, header, base)

    def slot_addresses(self, by: str) -> dict[int, int]:
        """tid -> address in the target of the id to charge (request or task) for every used slot."""
        offset = {REQUEST: pf.SLOT_REQUEST, TASK: pf.SLOT_TASK}[by]
        return {
            tid: self.base + self.header.layout.slot_offset(index) + offset
            for index, tid, *_ in pf.read_slots(self.mm, self.header.layout)
        }

    def counters(self) -> dict[str, int]:
        return pf.read_counters(self.mm, self.header.layout)

    def follow_requests(self) -> None:
        """Read new ring records, keeping request names (request id -> name)."""
        layout = self.header.layout
        written = self.counters().get("records_written", 0)
        if written - self.next_seq >= layout.ring_records:    # lapped: skip what was overwritten
            skip = written - layout.ring_records + 1
            self.records_lost += skip - self.next_seq
            self.next_seq = skip
        for _ in range(layout.ring_records):
            status, rec = pf.read_record(self.mm, layout, self.next_seq)
            if status == pf.READ_NOT_YET:
                return
            if status == pf.READ_TORN:
                return                                         # being written: next time
            if status == pf.READ_LOST:
                self.records_lost += 1
            elif rec[1] == pf.Rec.REQUEST_BEGIN or (rec[1] == pf.Rec.REQUEST_END and rec[8]):
                # an end record with a name renames the request (its route, found by routing)
                f = dict(zip(_RECORD_NAMES, rec))
                self.request_names[f["request"]] = pf.read_string(self.mm, layout, f["b"])
                if rec[1] == pf.Rec.REQUEST_BEGIN:
                    self.request_begun_ns[f["request"]] = f["ns"]
            elif rec[1] == pf.Rec.TASK_CREATE:
                f = dict(zip(_RECORD_NAMES, rec))
                name = pf.read_string(self.mm, layout, f["b"]) or (f"Task-{f['e']}" if f["e"] else "")
                coro = pf.read_string(self.mm, layout, f["c"])
                self.task_names[f["task"]] = f"{name} ({coro})" if coro else name
            self.next_seq += 1

    def close(self) -> None:
        try:
            self.mm.close()
        except (BufferError, ValueError):
            pass
