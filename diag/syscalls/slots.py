"""The target's probe file, as the syscall counter needs it: slot addresses, requests done, names.

The eBPF program needs, for each thread of the target, the address *in the target* of the id it
charges syscalls to. That is the base of the probe region's mapping (from /proc/PID/maps, by the
region's inode) plus the slot's offset plus the field's offset (``runtime.probefile`` documents the
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
        from ..errors import CoroscopeError
        from ..probe import map_region

        try:
            mm, path = map_region(pid)
        except CoroscopeError as exc:
            raise NoProbeFile(str(exc).replace("start it with", "it does not run with")
                              .replace(" or call runtime.tracing.enable()", ""))
        try:
            header = pf.parse_header(mm)
        except pf.ProbeFormatError as exc:
            mm.close()
            raise NoProbeFile(f"pid {pid}'s probe region: {exc}")
        if header.pid != pid or (header.start_ticks and header.start_ticks != pf.process_start_ticks(pid)):
            mm.close()
            raise NoProbeFile(f"pid {pid}'s probe region names another process")
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            fd = None
        try:
            base = pf.mapping_base(pid, fd) if fd is not None else None
        finally:
            if fd is not None:
                os.close(fd)
        if base is None:
            mm.close()
            raise NoProbeFile(f"pid {pid} does not map its probe region")
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

    def skip_to_now(self) -> None:
        """Move the cursor to the records being written now, forgetting losses so far."""
        written = self.counters().get("records_written", 0)
        self.next_seq = max(self.next_seq, written + 1 - 64)   # the counter lags a little
        self.records_lost = 0

    def edge(self) -> pf.RequestEdge:
        """The requests' state now, as a window's edge needs it (``runtime.probefile``)."""
        return pf.read_request_edge(self.mm, self.header.layout)

    def name_live_requests(self) -> None:
        """Names of the requests running now, from the LIVE table: a request whose begin
        record was overwritten before it was read keeps its name if it ran long enough to be
        seen here."""
        for rid, (_parent, sid, begun_ns) in pf.read_live(self.mm, self.header.layout).items():
            if rid not in self.request_names:
                self.request_names[rid] = pf.read_string(self.mm, self.header.layout, sid)
                self.request_begun_ns.setdefault(rid, begun_ns)

    def close(self) -> None:
        try:
            self.mm.close()
        except (BufferError, ValueError):
            pass
