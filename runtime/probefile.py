"""The probe file: the one shared-memory region a traced process publishes, and its writer.

Why shared memory and not a socket or a subscriber thread
---------------------------------------------------------
tokio-console gets its data through an in-process subscriber serving gRPC; every watched event
then costs the watched process work and syscalls. Here the process writes fixed-size records into
memory it maps once, with plain stores (``struct.pack_into`` on the mmap): no syscall per record,
no lock shared with a reader, nothing that depends on whether anyone watches. A reader in another
process maps the same memory read-only and copies what it wants. A syscall count taken with a
reader attached is the count without it, because the reader never talks to the target.

Where the region lives (version 4): an anonymous memfd, not a file
-------------------------------------------------------------------
Up to version 3 the region was ``/dev/shm/coroscope-<pid>.probe``: 0644, so any local user could
read request names (paths carry ids and tokens) and fd-origin stacks, and a process killed by
SIGTERM or SIGKILL left its 10 MB in tmpfs, which is memory, for good. Now it is a memfd
(``memfd_create("coroscope-probe")``, mode 0600; the fd that stays open is the close-on-exec
duplicate CPython's mmap object keeps, so tracing holds one fd, as it always did): it has no
name in any directory, and the kernel frees it with the last fd or mapping, so it is gone with its process
however that process ends. A reader finds it from the pid alone, among the target's open fds:
``/proc/PID/fd/N`` linking to ``/memfd:coroscope-probe (deleted)`` (``find_region``), opened
through that link. Opening it is allowed exactly when ptrace would be allowed to read the
process (same user and not made undumpable, or root), the permission model of gdb and py-spy;
other users cannot even list the fds. If the program closed the fd (a daemon closing every fd
it did not open), the mapping is still listed in /proc/PID/maps and a reader with
CAP_SYS_ADMIN opens it through /proc/PID/map_files. ``ProbeWriter.create(path=...)`` still
writes a named file (0600), for tests and for copies read with ``diag.probe``'s ``open_file``.

Layout, version 4 (``VERSION``; version 1 had no wake kind, ready time or never-awaited record;
version 2 wrote one IO_READY record per ready event; version 3 had no live-request table and
lived in /dev/shm). All integers little-endian; every section starts on a page.

    offset 0      HEADER (``HEADER_FMT``, fields below; the section table says where the rest is)
                  magic b"CSPROBE1", version, header size, pid, process start time in clock ticks
                  (field 22 of /proc/PID/stat: with the pid it names one process, so a file left
                  by a crash, whose pid was reused, is recognised as stale), creation time,
                  state (1 live, 2 closed), then (offset, count, entry size) of every section,
                  strings_used (bytes of the string table in use), the loop kind
                  ("runtime", "asyncio", "uvloop") and the slow-step threshold.
    COUNTERS      ``len(COUNTERS)`` signed 64-bit counters, index = position in ``COUNTERS``.
                  Updated in place (one aligned 8-byte store each, through a memoryview), so
                  they are always current; ``records_written`` alone is refreshed once per loop
                  iteration (and when the file is closed).
    SLOTS         ``NSLOTS`` slots of ``SLOT_SIZE`` bytes, one per thread that ever ran a step:
                  +0 kernel tid (0: free), +8 current task id, +16 current request id,
                  +24 monotonic ns at which the current step began (0: idle), +32 Python thread
                  ident, +40..63 reserved. Every field is 8-byte aligned and written
                  with one aligned 8-byte store, so the eBPF syscall counter can read one field
                  with bpf_probe_read_user at ``mapping_base + slot_offset(i) + SLOT_TASK`` (the
                  mapping base is found in /proc/PID/maps, by the file's path) without tearing.
                  Task and request are written only around steps that have one: a plain
                  callback outside any request leaves the slot at 0/0/0 without touching it.
    RING          ``ring_records`` records of ``RECORD_SIZE`` bytes (``RECORD_FMT``), record with
                  sequence number n (1-based) in entry (n - 1) % ring_records. Fields: seq_begin,
                  kind, thread slot, aux, monotonic ns, task id, request id, a, b, c, d, e, f, seq_end.
                  What aux and a..f mean per kind is ``RECORD_FIELDS``. A step begin says how the
                  step came to be queued (b, ``WAKES``) and how long it had been queued (a): see
                  "Wakes and scheduled delay" below. A loop iteration carries up to
                  ``ITERATION_INLINE_EVENTS`` of its poll's ready events itself: see "Loop
                  iterations and ready events" below.
    STRINGS       an append-only table: each entry is a u32 length and that many UTF-8 bytes;
                  a string id is the entry's offset in the section (id 0 is the empty string).
                  Names, qualnames, file:line, short stacks. When full, new strings get id 0 and
                  the counter ``strings_dropped`` grows.
    FDS           ``fd_entries`` entries of ``FD_ENTRY_SIZE`` bytes indexed by fd number:
                  ver_begin, kind, state (1 open, 0 closed), generation (opens of this fd number
                  so far), task id, request id, stack string id, monotonic ns of the open,
                  ver_end. The origin of every fd still open, even after the ring wrapped.
    LIVE          ``live_entries`` entries of ``LIVE_ENTRY_SIZE`` bytes: the requests running now,
                  each +0 parent request, +8 name string id, +16 monotonic ns of its begin, +24
                  request id (0: free), stored last (one ``pack_into``, which stores fields in
                  order), so a reader that sees the id sees the rest. See "Requests a window
                  counts" below.

Requests a window counts (version 4)
------------------------------------
The syscall counter charges each syscall, in the kernel, to the request id in the thread's
slot; to give counts *per request* it must also know how many requests a measurement window
holds and which ids they are, and that must not depend on a reader keeping up with the ring
(at 15,000 requests/s a 16,384-record ring laps in a tenth of a second). So the header region
holds what cannot be overwritten before it is read: the counters ``requests_begun`` and
``request_last_id`` (the highest id begun) and the LIVE table. The writer's order, which every
reader relies on (x86 keeps stores in order): at a request's begin, its LIVE entry (fields, then
the id), then the counters, then the thread slot; at its end, the slot, then the entry's id set
to 0, then ``requests_done``. A window from T0 to T1 counts the requests that began after T0
and ended before T1: read ``request_last_id`` at T0 (ids above it began later), and at T1 read
the counters, then the LIVE ids (an id at or below T1's ``request_last_id`` that is not listed
has ended, and its slot was cleared first: every syscall it made was charged already). The
number is ``requests_begun(T1) - requests_begun(T0)`` less the listed ids above T0's last id.
An entry is placed at ``id % live_entries`` or the next free one; with every entry taken, a
request goes unlisted and ``live_unlisted`` grows, and a reader then says the window's count of
requests may be off by that many. Names of finished requests come from the ring (their begin
records), so a reader that falls behind loses names, never counts.

Wakes and scheduled delay (version 2)
-------------------------------------
tokio-console's "scheduled" time is the time from a task's wake to its poll; its self-wake lint
counts a task that wakes itself. asyncio's Task queues its step in one of two ways, and the
callback of the ready handle says which: its own ``__step`` (C: a ``TaskStepMethWrapper``) at
creation and after a bare ``yield`` (``asyncio.sleep(0)``: the task woke itself), or
``task_wakeup`` (Python: ``__wakeup``), the done callback of the future it awaited (woken).
So a step begin carries, at no extra record, ``b`` = ``WAKE_FIRST`` / ``WAKE_SELF`` /
``WAKE_WOKEN`` (``WAKE_UNKNOWN`` when the emitter cannot tell) and ``a`` = ``ready_for_ns``:
how long before the step began it was certainly in the ready queue, namely since the stamp
of the iteration that runs it (the runtime's LOOP_ITERATION stamp, read after the poll's events
and the due timers were queued; everything a step is woken by runs in an earlier iteration's
callbacks, or is one of those). diag.instrument's loops use the end of the previous
iteration. That costs the writer one load and one subtraction per step
instead of a timestamp per ``call_soon``, and a duration packs cheaper than a second
timestamp (struct packs an int under 2**30, one CPython digit, some 300 instructions faster
than a larger one, which is also why the wake is in ``b`` and not in the head word's ``aux``
bits). Its price: a woken step's delay is a lower bound, short of the true one by what the
previous iteration still ran after the wake. For the other two kinds the reader knows the
exact moment from records it already has: the task's creation (first step) and the end of its
previous step (self-wake, queued as that step returned). ``a`` is 0 when unknown (the loop's
first iteration; uvloop, which has no loop iteration records). With loops in several threads
the iteration end is the last one any of them finished: a woken step's delay is then rougher.

Loop iterations and ready events (version 3)
--------------------------------------------
The runtime writes one LOOP_ITERATION record per iteration, after its poll and before its
callbacks run, stamped when the poll's events and due timers have been queued (microseconds
after the poll's end): a = ns blocked in the poll (measured from the end of the previous
iteration's callbacks to the stamp, so it includes the loop's few lines of bookkeeping around
the poll: one clock read fewer per iteration; 0 for the first), b = events the poll
returned, c = ready handles the iteration runs, and d, e, f = up to ``ITERATION_INLINE_EVENTS``
of those events, each ``fd << 2 | mask`` with the selectors mask the poll returned (1 read,
2 write; never 0, so 0 means no event; ``inline_ready_events`` unpacks them). Events past those
follow as IO_READY records with the same stamp. At low concurrency a poll returns one event, and one
record instead of two is a third of what tracing costs such a loop per request (measured on
the echo benchmark, ``benchmarks.tracing_overhead``). diag.instrument (stock asyncio loops)
writes its IO_READY records as the events come and its LOOP_ITERATION at the end of the
iteration, with d, e, f 0. Either way the ready events of a process are the IO_READY records plus
the inline events, and their total is the ``io_ready`` counter.

A coroutine never awaited: CPython warns through ``warnings._warn_unawaited_coroutine`` when
such a coroutine is collected; the tracer wraps that function and writes one
``CORO_NEVER_AWAITED`` record (qualname, where it was created from ``cr_origin``, where it is
defined) before the usual warning.

Consistency without locks (the seqlock rule, for ring records and fd entries)
-----------------------------------------------------------------------------
The writer stores a whole record with one ``pack_into`` call. CPython's pack_into zero-fills
the 96 bytes first (memset, whose first store covers seq_begin) and then stores the fields in
order (one packer call per field): seq_begin first, seq_end last. x86-64 keeps stores in program order
as seen by other CPUs (TSO), and loads in order too. A reader therefore reads seq_end, then the
record, then seq_begin again, and accepts the copy only if all three equal the sequence it
expected: a later writer of the same entry stores its seq_begin before any of its payload, so a
payload store the copy caught is seen by the final seq_begin load. A torn record is never
returned. (A weakly ordered CPU, arm64, would need barriers the writer does not have: the writer
refuses to run there; see ``ProbeWriter.create``.)

No lock on the write path: sequence numbers come from ``itertools.count``, or its C twin when the
accelerator is chosen (``runtime.accel.sequence_counter``), both atomic under the GIL,
so two threads never get the same one. A thread can be switched out between taking a number and
storing its record, so with several writing threads records may be published slightly out of
order, and in the worst case a delayed record lands over a newer one a full lap later. The
reader copes (``read_record``): a missing record is waited for while it can still come, and
counted lost once the writer is a whole lap past it. One loop per process, the usual case, has
one writing thread and none of this happens.

Lost records: record n lives in entry (n-1) % ring_records until record n + ring_records replaces
it. A reader expecting n that finds a larger sequence there knows n was overwritten, counts it
lost and moves on, so losses are counted exactly, one by one (``read_record`` returns which case).
"""
from __future__ import annotations

import enum
import itertools
import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass

VERSION = 4
MAGIC = b"CSPROBE1"
PAGE = 4096
MEMFD_NAME = "coroscope-probe"
MEMFD_LINK = f"/memfd:{MEMFD_NAME}"      # what /proc/PID/fd/N and /proc/PID/maps show for it
LEGACY_DIR = "/dev/shm"                  # where versions 1-3 left named files


# ---------------------------------------------------------------------------------------- header
# (name, struct code); offsets follow from the order. Only ever append fields (and bump VERSION).
HEADER_FIELDS: list[tuple[str, str]] = [
    ("magic", "8s"),
    ("version", "I"),
    ("header_size", "I"),
    ("pid", "Q"),
    ("start_ticks", "Q"),       # /proc/PID/stat field 22 of the writer: pid + this = one process
    ("created_unix_ns", "Q"),
    ("state", "Q"),             # STATE_LIVE while the writer runs, STATE_CLOSED after close()
    ("counters_off", "Q"),
    ("counters_count", "Q"),
    ("slots_off", "Q"),
    ("slots_count", "Q"),
    ("slot_size", "Q"),
    ("ring_off", "Q"),
    ("ring_records", "Q"),      # a power of two
    ("record_size", "Q"),
    ("strings_off", "Q"),
    ("strings_size", "Q"),
    ("strings_used", "Q"),      # bytes of STRINGS in use; grows only
    ("fds_off", "Q"),
    ("fd_entries", "Q"),
    ("fd_entry_size", "Q"),
    ("total_size", "Q"),
    ("loop_kind", "16s"),       # b"runtime", b"asyncio", b"uvloop" (NUL padded)
    ("slow_step_ns", "Q"),
    ("live_off", "Q"),          # version 4: the LIVE table of requests running now
    ("live_entries", "Q"),
    ("live_entry_size", "Q"),
]
HEADER_FMT = "<" + "".join(code for _, code in HEADER_FIELDS)
HEADER_STRUCT = struct.Struct(HEADER_FMT)
HEADER_SIZE = 512
assert HEADER_STRUCT.size <= HEADER_SIZE


def _field_offsets(fields: list[tuple[str, str]]) -> dict[str, int]:
    offsets, fmt = {}, "<"
    for name, code in fields:
        offsets[name] = struct.calcsize(fmt)
        fmt += code
    return offsets


HEADER_OFFSETS = _field_offsets(HEADER_FIELDS)
STRINGS_USED_OFFSET = HEADER_OFFSETS["strings_used"]
STATE_OFFSET = HEADER_OFFSETS["state"]
STATE_LIVE, STATE_CLOSED = 1, 2

# -------------------------------------------------------------------------------------- counters
FD_KINDS = ["unknown", "socket", "eventfd", "epoll", "pipe", "timerfd", "file", "other"]


class FdKind(enum.IntEnum):
    UNKNOWN = 0
    SOCKET = 1
    EVENTFD = 2
    EPOLL = 3
    PIPE = 4
    TIMERFD = 5
    FILE = 6
    OTHER = 7


def fd_kind_code(kind: str | int) -> int:
    if isinstance(kind, int):
        return kind if 0 <= kind < len(FD_KINDS) else FdKind.OTHER
    try:
        return FD_KINDS.index(kind)
    except ValueError:
        return FdKind.OTHER


COUNTERS: list[str] = [
    "tasks_alive", "tasks_created", "steps", "slow_steps",
    "requests_begun", "requests_done", "requests_active",
    # these three are adjacent: the loop-iteration tracepoint stores them with one pack
    "loop_iterations", "io_ready", "records_written",
    "timers_fired", "executor_pending", "strings_dropped", "fd_table_overflow",
] + [f"fds_open_{k}" for k in FD_KINDS] + [
    # version 4: the highest request id begun, and requests the full LIVE table could not list
    "request_last_id", "live_unlisted",
]
COUNTER_INDEX = {name: i for i, name in enumerate(COUNTERS)}
NCOUNTERS = 32                      # room to append counters without moving sections
assert len(COUNTERS) <= NCOUNTERS
COUNTERS_STRUCT = struct.Struct(f"<{NCOUNTERS}q")

# ----------------------------------------------------------------------------------------- slots
NSLOTS = 64
SLOT_SIZE = 64
SLOT_TID = 0          # kernel tid (gettid), 0: slot free
SLOT_TASK = 8         # current task id, 0: none (between steps, or a plain callback)
SLOT_REQUEST = 16     # current request id, 0: none
SLOT_STEP_START = 24  # monotonic ns when the running step began, 0: not in a step
SLOT_IDENT = 32       # threading.get_ident()
SLOT_FMT = "<QQQQQQQQ"
SLOT_STRUCT = struct.Struct(SLOT_FMT)
SLOT_CURRENT = struct.Struct("<QQQ")   # task, request, step start: one store at SLOT_TASK

# ------------------------------------------------------------------------------------------ ring
RING_RECORDS = 16384
RECORD_FMT = "<QHHIQQQqqqqqqQ"
RECORD_STRUCT = struct.Struct(RECORD_FMT)
RECORD_SIZE = RECORD_STRUCT.size
assert RECORD_SIZE == 96
RECORD_SEQ_END = RECORD_SIZE - 8
# The writer's view of the same 96 bytes: kind (u16), thread (u16) and aux (u32) stored as one
# little-endian u64, kind | thread << 16 | aux << 32, so a record is one pack of 12 words.
RECORD_WORDS_STRUCT = struct.Struct("<QQQQQqqqqqqQ")
# Shorter forms for the hot records, whose zero words are pad bytes ("x"): pack_into zero-fills
# the whole record before it stores the fields, so a pad costs nothing, where an argument costs
# some 100 instructions. seq, head, ns | a | seq (io ready, timer fire):
RECORD_A_STRUCT = struct.Struct("<QQQ16xq40xQ")
# seq, head, ns | a, b, c, d | seq (a loop iteration with at most one ready event):
RECORD_ABCD_STRUCT = struct.Struct("<QQQ16xqqqq16xQ")
# seq, head, ns, task, request, a, b | seq (step begin, step end):
RECORD_TASK_AB_STRUCT = struct.Struct("<QQQQQqq32xQ")
assert all(s.size == RECORD_SIZE for s in (RECORD_WORDS_STRUCT, RECORD_A_STRUCT,
                                           RECORD_ABCD_STRUCT, RECORD_TASK_AB_STRUCT))
# Names of the unpacked record tuple, in order (zip them with read_record's tuple).
RECORD_FIELD_NAMES = ("seq", "kind", "thread", "aux", "ns", "task", "request",
                      "a", "b", "c", "d", "e", "f", "seq_end")
SEQ = struct.Struct("<Q")


class Rec(enum.IntEnum):
    TASK_CREATE = 1
    STEP_BEGIN = 2
    STEP_END = 3
    TASK_DONE = 4
    IO_REGISTER = 5
    IO_UNREGISTER = 6
    IO_READY = 7
    TIMER_ADD = 8
    TIMER_FIRE = 9
    TIMER_CANCEL = 10
    FD_OPEN = 11
    FD_CLOSE = 12
    REQUEST_BEGIN = 13
    REQUEST_END = 14
    LOOP_ITERATION = 15
    EXECUTOR_SUBMIT = 16
    EXECUTOR_DONE = 17
    SLOW_STEP = 18
    TASK_NAME = 19       # a task named after it was created (asyncio.create_task(name=...))
    CORO_NEVER_AWAITED = 20   # a coroutine object collected without ever being awaited


# What aux and a..f hold for each kind; "sid:" fields are string ids. Readers name fields by this.
RECORD_FIELDS: dict[Rec, dict[str, str]] = {
    Rec.TASK_CREATE: {"aux": "late", "a": "parent_task", "b": "sid:name", "c": "sid:coro",
                      "d": "sid:created_at", "e": "default_name_number", "f": "sid:coro_defined_at"},
    Rec.STEP_BEGIN: {"a": "ready_for_ns", "b": "wake"},   # see "Wakes and scheduled delay"
    Rec.STEP_END: {"a": "duration_ns"},
    Rec.TASK_DONE: {"aux": "outcome", "b": "sid:exception"},
    Rec.IO_REGISTER: {"aux": "events", "a": "fd"},
    Rec.IO_UNREGISTER: {"aux": "events", "a": "fd"},
    Rec.IO_READY: {"aux": "events", "a": "fd"},   # ns: when the poll's first event was recorded
    Rec.TIMER_ADD: {"a": "timer", "b": "when_ns", "c": "sid:callback"},
    Rec.TIMER_FIRE: {"a": "timer"},
    Rec.TIMER_CANCEL: {"a": "timer"},
    Rec.FD_OPEN: {"aux": "fd_kind", "a": "fd", "b": "sid:stack", "c": "generation"},
    Rec.FD_CLOSE: {"aux": "fd_kind", "a": "fd", "c": "generation"},
    Rec.REQUEST_BEGIN: {"a": "parent_request", "b": "sid:name"},
    # b: the request's name when it changed while it ran (a route template found by the
    # framework's router after the request began), 0 when the begin record's name stands
    Rec.REQUEST_END: {"aux": "failed", "a": "duration_ns", "b": "sid:name"},
    # d, e, f: up to three of the poll's ready events, 0 for none (inline_ready_events)
    Rec.LOOP_ITERATION: {"a": "poll_ns", "b": "nevents", "c": "ncallbacks",
                         "d": "ready_1", "e": "ready_2", "f": "ready_3"},
    Rec.EXECUTOR_SUBMIT: {"a": "future"},
    Rec.EXECUTOR_DONE: {"a": "future", "b": "duration_ns"},
    Rec.SLOW_STEP: {"a": "duration_ns", "b": "sid:stack"},
    Rec.TASK_NAME: {"b": "sid:name"},
    # task/request: those current when it was collected (not where it was created)
    Rec.CORO_NEVER_AWAITED: {"b": "sid:coro", "c": "sid:created_at", "d": "sid:defined_at"},
}
ITERATION_INLINE_EVENTS = 3


def inline_ready_events(d: int, e: int, f: int) -> list[tuple[int, int]]:
    """The (fd, events) pairs a LOOP_ITERATION record holds itself, from its d, e, f words
    (each ``fd << 2 | mask``, selectors' mask: 1 read, 2 write, never 0; 0: no event); events
    as the IO_READY record has them (1 read, 4 write)."""
    return [(word >> 2, (word & 1) | (word & 2) << 1) for word in (d, e, f) if word]


OUTCOMES = ["result", "exception", "cancelled"]
# STEP_BEGIN aux: how the step's handle came to be in the ready queue
WAKE_UNKNOWN, WAKE_FIRST, WAKE_SELF, WAKE_WOKEN = 0, 1, 2, 3
WAKES = ["unknown", "first", "self", "woken"]
# record.thread when the emitter did not look its slot up. Under 2**14 (version 3; 0xFFFF before):
# a head word kind | NO_THREAD << 16 is then under 2**30, one CPython digit, which struct packs
# several times faster than a larger int, and most such records (iterations, io, timers) are hot.
NO_THREAD = 0x3FFF
assert NSLOTS < NO_THREAD

# --------------------------------------------------------------------------------------- strings
STRINGS_SIZE = 4 << 20
STRING_LEN = struct.Struct("<I")
MAX_STRING = 4000      # longer strings are cut (short stacks, names)

# -------------------------------------------------------------------------------------- fd table
FD_ENTRIES = 65536
FD_ENTRY_FMT = "<QIIQQQQQQ"
FD_ENTRY_STRUCT = struct.Struct(FD_ENTRY_FMT)
FD_ENTRY_SIZE = FD_ENTRY_STRUCT.size
assert FD_ENTRY_SIZE == 64


# ------------------------------------------------------------------------- live requests
LIVE_ENTRIES = 8192
LIVE_ENTRY_FMT = "<QQQQ"         # parent, name string id, begin ns, request id (0: free)
LIVE_ENTRY_STRUCT = struct.Struct(LIVE_ENTRY_FMT)
LIVE_ENTRY_SIZE = LIVE_ENTRY_STRUCT.size
LIVE_WORDS = LIVE_ENTRY_SIZE // 8
LIVE_ID = 3                      # the word of an entry that holds the request id


def _align(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


@dataclass(frozen=True)
class Layout:
    """Offsets and sizes of every section; what the header's section table holds."""

    counters_off: int
    slots_off: int
    ring_off: int
    ring_records: int
    strings_off: int
    strings_size: int
    fds_off: int
    fd_entries: int
    total_size: int
    live_off: int = 0
    live_entries: int = 0

    @classmethod
    def default(cls, ring_records: int = RING_RECORDS, strings_size: int = STRINGS_SIZE,
                fd_entries: int = FD_ENTRIES, live_entries: int = LIVE_ENTRIES) -> "Layout":
        if ring_records & (ring_records - 1):
            raise ValueError("ring_records must be a power of two")
        counters_off = HEADER_SIZE
        slots_off = _align(counters_off + NCOUNTERS * 8)
        ring_off = _align(slots_off + NSLOTS * SLOT_SIZE)
        strings_off = _align(ring_off + ring_records * RECORD_SIZE)
        fds_off = _align(strings_off + strings_size)
        live_off = _align(fds_off + fd_entries * FD_ENTRY_SIZE)
        total = _align(live_off + live_entries * LIVE_ENTRY_SIZE)
        return cls(counters_off, slots_off, ring_off, ring_records, strings_off, strings_size,
                   fds_off, fd_entries, total, live_off, live_entries)

    def slot_offset(self, i: int) -> int:
        return self.slots_off + i * SLOT_SIZE

    def record_offset(self, seq: int) -> int:
        return self.ring_off + ((seq - 1) & (self.ring_records - 1)) * RECORD_SIZE

    def fd_offset(self, fd: int) -> int:
        return self.fds_off + fd * FD_ENTRY_SIZE


DEFAULT_LAYOUT = Layout.default()


def slot_offset(i: int, layout: Layout = DEFAULT_LAYOUT) -> int:
    """Offset of thread slot ``i`` from the start of the mapping (for the eBPF reader)."""
    return layout.slot_offset(i)


def process_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), None if no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(b")") + 2:].split()
    return int(rest[22 - 3])


# ------------------------------------------------------------------------ finding the region
def _own_region_path(inode: int) -> str | None:
    """/proc/PID/fd/N of this process's fd on the region (the mmap object's duplicate), so the
    writer's ``path`` opens it like any file: for readers in the same process."""
    pid = os.getpid()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.stat(f"/proc/self/fd/{name}").st_ino == inode and \
                    os.readlink(f"/proc/self/fd/{name}").startswith(MEMFD_LINK):
                return f"/proc/{pid}/fd/{name}"
        except OSError:
            continue
    return None


def region_paths(pid: int) -> list[str]:
    """Paths through which process ``pid``'s probe region can be opened, best first: its memfd
    among /proc/PID/fd, else (the program closed that fd) its mapping in /proc/PID/map_files.
    Empty if it has none. PermissionError when we may not look (ptrace's rules: another user's
    process); FileNotFoundError when there is no such process."""
    fd_dir = f"/proc/{pid}/fd"
    found = []
    for name in os.listdir(fd_dir):
        try:
            link = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if link.startswith(MEMFD_LINK) and link[len(MEMFD_LINK):] in ("", " (deleted)"):
            found.append(f"{fd_dir}/{name}")
    if found:
        return sorted(found, key=lambda p: int(p.rsplit("/", 1)[1]))
    start, end = _memfd_mapping(pid)
    if start is not None:
        return [f"/proc/{pid}/map_files/{start:x}-{end:x}"]
    return []


def _memfd_mapping(pid: int, inode: int | None = None,
                   dev: int | None = None) -> tuple[int | None, int | None]:
    """(start, end) of ``pid``'s mapping of a probe memfd at offset 0 (of that device and
    inode, if given)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) < 6 or int(parts[2], 16) != 0:
                    continue
                if inode is not None:
                    major, minor = parts[3].split(":")
                    if int(parts[4]) != inode or (dev is not None and (
                            int(major, 16), int(minor, 16)) != (os.major(dev), os.minor(dev))):
                        continue
                mapped = parts[5].rstrip("\n")
                if inode is None and not mapped.startswith(MEMFD_LINK):
                    continue
                start, end = parts[0].split("-")
                return int(start, 16), int(end, 16)
    except OSError:
        pass
    return None, None


def mapping_base(pid: int, fd: int) -> int | None:
    """Where process ``pid`` mapped the region a reader opened as ``fd`` (matched by device
    and inode), or None: the address the eBPF program reads thread slots at."""
    st = os.fstat(fd)
    return _memfd_mapping(pid, st.st_ino, st.st_dev)[0]


# ---------------------------------------------------------------------------------------- header
@dataclass(frozen=True)
class Header:
    version: int
    pid: int
    start_ticks: int
    created_unix_ns: int
    state: int
    layout: Layout
    strings_used: int
    loop_kind: str
    slow_step_ns: int


class ProbeFormatError(Exception):
    """The bytes are not a probe file this code can read (bad magic, version, or sizes)."""


def parse_header(buf) -> Header:
    if len(buf) < HEADER_STRUCT.size:
        raise ProbeFormatError("file too short for a probe header")
    v = dict(zip([n for n, _ in HEADER_FIELDS], HEADER_STRUCT.unpack_from(buf, 0)))
    if v["magic"] != MAGIC:
        raise ProbeFormatError("not a coroscope probe file (bad magic)")
    if v["version"] != VERSION:
        raise ProbeFormatError(f"probe file version {v['version']}, this coroscope reads {VERSION}")
    if (v["record_size"] != RECORD_SIZE or v["slot_size"] != SLOT_SIZE
            or v["fd_entry_size"] != FD_ENTRY_SIZE or v["total_size"] > len(buf)
            or v["live_entry_size"] != LIVE_ENTRY_SIZE
            or v["live_off"] + v["live_entries"] * LIVE_ENTRY_SIZE > v["total_size"]
            or v["ring_records"] == 0 or v["ring_records"] & (v["ring_records"] - 1)):
        raise ProbeFormatError("probe file sections do not match its header")
    layout = Layout(v["counters_off"], v["slots_off"], v["ring_off"], v["ring_records"],
                    v["strings_off"], v["strings_size"], v["fds_off"], v["fd_entries"],
                    v["total_size"], v["live_off"], v["live_entries"])
    return Header(v["version"], v["pid"], v["start_ticks"], v["created_unix_ns"], v["state"],
                  layout, v["strings_used"], v["loop_kind"].rstrip(b"\0").decode(),
                  v["slow_step_ns"])


# ---------------------------------------------------------------------------- reading primitives
# Used by diag.probe (and by anyone who maps the file). They only load from the mapping.

READ_OK, READ_NOT_YET, READ_LOST, READ_TORN = range(4)


def read_record(buf, layout: Layout, seq: int):
    """(status, fields) for record ``seq``: READ_OK with the unpacked tuple; READ_NOT_YET (not
    written yet); READ_LOST (overwritten by a later lap, or never to be seen: the writer is a
    full lap past it); READ_TORN (being written right now: try again)."""
    off = layout.record_offset(seq)
    end = SEQ.unpack_from(buf, off + RECORD_SEQ_END)[0]
    if end == seq:
        fields = RECORD_STRUCT.unpack_from(buf, off)
        begin = SEQ.unpack_from(buf, off)[0]
        if begin == seq and fields[0] == seq and fields[-1] == seq:
            return READ_OK, fields
        return (READ_LOST if begin > seq else READ_TORN), None
    if end > seq:
        return READ_LOST, None
    begin = SEQ.unpack_from(buf, off)[0]
    if begin > seq:            # a later lap is being written over an older record
        return READ_LOST, None
    if begin == seq:
        return READ_TORN, None
    # Not there. If the next entry already holds a record a whole lap newer, this one's place was
    # reused after it: it is lost (a writer thread delayed it, see the module's essay).
    nxt = layout.record_offset(seq + 1) + RECORD_SEQ_END
    if SEQ.unpack_from(buf, nxt)[0] > seq + layout.ring_records:
        return READ_LOST, None
    return READ_NOT_YET, None


def read_string(buf, layout: Layout, sid: int) -> str:
    if sid <= 0 or sid + 4 > layout.strings_size:
        return ""
    off = layout.strings_off + sid
    (n,) = STRING_LEN.unpack_from(buf, off)
    if sid + 4 + n > layout.strings_size:
        return ""
    return bytes(buf[off + 4:off + 4 + n]).decode("utf-8", "replace")


def read_counters(buf, layout: Layout) -> dict[str, int]:
    values = COUNTERS_STRUCT.unpack_from(buf, layout.counters_off)
    return {name: values[i] for i, name in enumerate(COUNTERS)}


def read_slots(buf, layout: Layout) -> list[tuple[int, ...]]:
    """(index, tid, task, request, step_start_ns, ident, steps) of every used slot."""
    out = []
    for i in range(NSLOTS):
        v = SLOT_STRUCT.unpack_from(buf, layout.slot_offset(i))
        if v[0]:
            out.append((i,) + v[:6])
    return out


def read_live(buf, layout: Layout) -> dict[int, tuple[int, int, int]]:
    """The requests running now: request id -> (parent, name string id, begin ns). An entry
    rewritten while it was read (its id changed) is left out: that request has ended."""
    if not layout.live_entries:
        return {}
    end = layout.live_off + layout.live_entries * LIVE_ENTRY_SIZE
    words = memoryview(buf)[layout.live_off:end].cast("Q")
    try:
        ids = words[LIVE_ID::LIVE_WORDS].tolist()
        out = {}
        for i, rid in enumerate(ids):
            if rid:
                fields = LIVE_ENTRY_STRUCT.unpack_from(buf, layout.live_off + i * LIVE_ENTRY_SIZE)
                if fields[LIVE_ID] == rid and words[i * LIVE_WORDS + LIVE_ID] == rid:
                    out[rid] = fields[:LIVE_ID]
        return out
    finally:
        words.release()


@dataclass(frozen=True)
class RequestEdge:
    """What a window's edge needs, read in the order "Requests a window counts" prescribes:
    the counters first, then the LIVE table."""

    begun: int                  # requests_begun
    done: int                   # requests_done
    last_id: int                # the highest request id begun
    unlisted: int               # live_unlisted: requests the full table could not list
    live: dict                  # request id -> (parent, name sid, begin ns), running now
    ns_before: int              # monotonic ns just before the counters were read: a request
                                # that ended by then is counted as ended (a window's end)
    ns_after: int               # ... just after: one that begins from then on has a larger
                                # id than last_id (a window's start)


def read_request_edge(buf, layout: Layout) -> RequestEdge:
    before = time.monotonic_ns()
    values = COUNTERS_STRUCT.unpack_from(buf, layout.counters_off)
    after = time.monotonic_ns()
    live = read_live(buf, layout)
    c = COUNTER_INDEX
    return RequestEdge(values[c["requests_begun"]], values[c["requests_done"]],
                       values[c["request_last_id"]], values[c["live_unlisted"]], live,
                       before, after)


def read_fd_entry(buf, layout: Layout, fd: int):
    """The fd table entry (ver, kind, state, generation, task, request, stack_sid, opened_ns) of
    ``fd``, or None if never written or caught mid-write twice."""
    if not 0 <= fd < layout.fd_entries:
        return None
    off = layout.fd_offset(fd)
    for _ in range(2):
        end = SEQ.unpack_from(buf, off + FD_ENTRY_SIZE - 8)[0]
        if end == 0:
            return None
        v = FD_ENTRY_STRUCT.unpack_from(buf, off)
        begin = SEQ.unpack_from(buf, off)[0]
        if begin == end == v[0] == v[-1]:
            return v[:-1]
    return None


# ---------------------------------------------------------------------------------------- writer
class ProbeWriter:
    """Creates the probe file of this process and writes into it; only stores, no syscalls,
    after ``create``. ``emit`` takes no lock (see the module's essay); strings and the fd
    table, written rarely, take ``_lock``."""

    def __init__(self, path: str, mm: mmap.mmap, layout: Layout, pid: int, inode: int):
        self.path = path             # a named file, or /proc/PID/fd/N of the memfd
        self.mm = mm
        self.layout = layout
        self.pid = pid
        self._inode = inode
        self._lock = threading.Lock()
        # the next sequence number; atomic under the GIL (itertools.count, or its C twin)
        from . import accel     # the loop's module: readers of probe files need not import it
        self._seq_counter = accel.sequence_counter(1)
        # The ring offset of record seq is ring_offsets[seq & ring_mask]: one load, where the
        # arithmetic would make four ints. Filled in place in a list allocated once at its size:
        # built by growing (a list, cycle(), tuple(generator)) it would leave the freed smaller
        # blocks in the heap, where the target's own large mallocs then find room they would
        # not have found untraced (seen: asyncio's 256 KiB recv buffer stopped being mmap'd).
        self.ring_mask = mask = layout.ring_records - 1
        self.ring_offsets = offsets = [0] * layout.ring_records
        for seq in range(layout.ring_records):
            offsets[seq] = layout.ring_off + ((seq - 1) & mask) * RECORD_SIZE
        self.emit = self._make_emit()
        self._strings: dict[str, int] = {"": 0}
        self._strings_used = 4                       # entry 0 is the empty string
        # The live counters and the slot table, as 8-byte integers stored straight into the
        # mapping: counters[i] += 1 is the whole cost of keeping a counter current.
        view = memoryview(mm)
        self.counters = view[layout.counters_off:layout.counters_off + NCOUNTERS * 8].cast("q")
        self.slot_words = view[layout.slots_off:layout.slots_off + NSLOTS * SLOT_SIZE].cast("Q")
        self.live_words = view[layout.live_off:layout.live_off + layout.live_entries * LIVE_ENTRY_SIZE].cast("Q")
        self._views = (view, self.counters, self.slot_words, self.live_words)
        self._live_n = layout.live_entries
        self._live_moved: dict[int, int] = {}        # request id -> its entry, if not id % n
        self._live_lock = threading.Lock()
        self._slot_lock = threading.Lock()
        self._slot_of_ident: dict[int, int] = {}
        self._fd_versions: dict[int, int] = {}
        self._fd_generations: dict[int, int] = {}
        self.closed = False

    # ------------------------------------------------------------------ creation and removal
    @classmethod
    def create(cls, pid: int | None = None, *, loop_kind: str = "runtime",
               slow_step_ns: int = 100_000_000, layout: Layout | None = None,
               path: str | None = None) -> "ProbeWriter":
        """Create the probe region of this process and map it: an anonymous memfd (see "Where
        the region lives"), or, given ``path``, a named file (0600, built under a temporary
        name and renamed into place, so a reader never sees it half made)."""
        import platform
        if platform.machine() not in ("x86_64", "AMD64", "i686", "i386"):
            raise RuntimeError("the probe file's lock-free protocol relies on x86 store order")
        pid = os.getpid() if pid is None else pid
        layout = layout or DEFAULT_LAYOUT
        if path is None:
            fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC)
            tmp = None
        else:
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)         # a memfd starts 0777; a umask may have widened a file
            os.ftruncate(fd, layout.total_size)
            mm = mmap.mmap(fd, layout.total_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        HEADER_STRUCT.pack_into(
            mm, 0, MAGIC, VERSION, HEADER_SIZE, pid, process_start_ticks(pid) or 0,
            time.time_ns(), STATE_LIVE, layout.counters_off, NCOUNTERS, layout.slots_off,
            NSLOTS, SLOT_SIZE, layout.ring_off, layout.ring_records, RECORD_SIZE,
            layout.strings_off, layout.strings_size, 4, layout.fds_off, layout.fd_entries,
            FD_ENTRY_SIZE, layout.total_size, loop_kind.encode()[:16], slow_step_ns,
            layout.live_off, layout.live_entries, LIVE_ENTRY_SIZE)
        inode = os.fstat(fd).st_ino
        # The mmap object keeps a close-on-exec duplicate of the fd for its own use, open until
        # the mapping is closed: that one is how readers find a memfd region, so ours can go.
        os.close(fd)
        if tmp is None:
            return cls(_own_region_path(inode) or MEMFD_LINK, mm, layout, pid, inode)
        os.replace(tmp, path)        # replaces a stale file of an earlier process with our pid
        return cls(path, mm, layout, pid, inode)

    def set_loop_kind(self, loop_kind: str) -> None:
        """Name the loop that runs. ``create`` is given what the environment asked for, before
        any loop exists; the loop itself says what it is when it starts (a program that calls
        ``runtime.run()`` under COROSCOPE_LOOP=asyncio runs the runtime). One 16-byte store: a
        reader that catches it half written sees a mix of two names for one read."""
        off = HEADER_OFFSETS["loop_kind"]
        self.mm[off:off + 16] = loop_kind.encode()[:16].ljust(16, b"\0")

    def close(self, unlink: bool = True) -> None:
        """Flush, mark the file closed, and remove it (a reader that has it mapped keeps it)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.flush_counters()
            SEQ.pack_into(self.mm, STATE_OFFSET, STATE_CLOSED)
        except ValueError:
            pass
        for view in reversed(self._views):
            view.release()
        if unlink and not self.path.startswith(("/proc/", MEMFD_LINK)):
            try:
                if os.stat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
            except OSError:
                pass
        try:
            self.mm.close()
        except BufferError:
            pass

    def detach(self) -> None:
        """Unmap without writing anything (a forked child leaving its parent's region alone,
        and closing the parent's memfd it inherited, so readers never find it here)."""
        self.closed = True
        for view in reversed(self._views):
            view.release()
        self.mm.close()            # with it the duplicate fd a reader would find in the child

    # ------------------------------------------------------------------------------- records
    def _make_emit(self):
        """``emit(kind, thread, aux, task, request, ns, a=0, ..., f=0)``: store one record.
        A closure over locals, because this is the one function every tracepoint calls."""
        mm, pack, next_seq = self.mm, RECORD_WORDS_STRUCT.pack_into, self._seq_counter.__next__
        offsets, mask = self.ring_offsets, self.ring_mask

        def emit(kind, thread, aux, task, request, ns, a=0, b=0, c=0, d=0, e=0, f=0):
            seq = next_seq()
            pack(mm, offsets[seq & mask], seq, kind | thread << 16 | aux << 32, ns, task, request,
                 a, b, c, d, e, f, seq)
        return emit

    @property
    def records_written(self) -> int:
        """Sequence numbers handed out so far (records written or being written)."""
        return next_of(self._seq_counter) - 1

    # ------------------------------------------------------------------------------- strings
    def intern(self, text: str) -> int:
        """The string id of ``text``, appending it to the table the first time."""
        sid = self._strings.get(text)
        if sid is not None:
            return sid
        data = text.encode("utf-8", "replace")[:MAX_STRING]
        with self._lock:
            sid = self._strings.get(text)
            if sid is not None:
                return sid
            used = self._strings_used
            if used + 4 + len(data) > self.layout.strings_size:
                self.counters[COUNTER_INDEX["strings_dropped"]] += 1
                return 0
            off = self.layout.strings_off + used
            self.mm[off + 4:off + 4 + len(data)] = data      # bytes before the length
            STRING_LEN.pack_into(self.mm, off, len(data))
            self._strings_used = used + 4 + len(data)
            SEQ.pack_into(self.mm, STRINGS_USED_OFFSET, self._strings_used)
            self._strings[text] = used
            return used

    # --------------------------------------------------------------------------- thread slots
    def thread_slot(self, ident: int | None = None) -> int:
        """The slot index of the calling thread, claiming one the first time (this first call
        makes the one gettid syscall; later ones are a dict lookup). NO_THREAD if all are used."""
        ident = threading.get_ident() if ident is None else ident
        slot = self._slot_of_ident.get(ident)
        if slot is not None:
            return slot
        with self._slot_lock:
            tid = threading.get_native_id()
            live_tids = None
            for i in range(NSLOTS):
                off = self.layout.slot_offset(i)
                used_tid = SEQ.unpack_from(self.mm, off)[0]
                if used_tid:
                    if live_tids is None:
                        live_tids = set(_thread_ids(self.pid))
                    if used_tid in live_tids:
                        continue
                    self._slot_of_ident = {k: v for k, v in self._slot_of_ident.items() if v != i}
                SLOT_STRUCT.pack_into(self.mm, off, tid, 0, 0, 0, ident, 0, 0, 0)
                self._slot_of_ident[ident] = i
                return i
        return NO_THREAD

    def slot_offset(self, slot: int) -> int:
        return self.layout.slot_offset(slot)

    def set_current(self, slot: int, task: int, request: int, step_start_ns: int = 0) -> None:
        if slot != NO_THREAD:
            words, base = self.slot_words, slot * (SLOT_SIZE // 8)
            words[base + 1] = task
            words[base + 2] = request
            words[base + 3] = step_start_ns

    # ------------------------------------------------------------------------------ counters
    def flush_counters(self) -> None:
        """Refresh ``records_written`` (the other counters are always current)."""
        self.counters[COUNTER_INDEX["records_written"]] = self.records_written

    # ------------------------------------------------------------------------- live requests
    def live_insert(self, request_id: int, parent: int, name_sid: int, begun_ns: int) -> None:
        """List a request that begins (before the counters say it began: see "Requests a window
        counts"). With every entry taken it goes unlisted, and ``live_unlisted`` says so.
        Its entry is ``request_id % live_entries`` unless that one is taken (a request still
        running from a lap of ids ago): then the next free one, remembered in ``_live_moved``.
        Only with several threads writing is a lock taken (two could find the same entry free)."""
        if len(self._slot_of_ident) > 1:
            with self._live_lock:
                self._live_insert(request_id, parent, name_sid, begun_ns)
        else:
            self._live_insert(request_id, parent, name_sid, begun_ns)

    def _live_insert(self, request_id, parent, name_sid, begun_ns) -> None:
        n = self._live_n
        if not n:
            return
        words = self.live_words
        i = request_id % n
        if words[i * LIVE_WORDS + LIVE_ID]:
            for _ in range(n - 1):
                i = i + 1 if i + 1 < n else 0
                if not words[i * LIVE_WORDS + LIVE_ID]:
                    break
            else:
                self.counters[COUNTER_INDEX["live_unlisted"]] += 1
                return
            self._live_moved[request_id] = i
        LIVE_ENTRY_STRUCT.pack_into(self.mm, self.layout.live_off + i * LIVE_ENTRY_SIZE,
                                    parent, name_sid, begun_ns, request_id)

    def live_remove(self, request_id: int) -> None:
        n = self._live_n
        if n:
            words = self.live_words
            at = request_id % n * LIVE_WORDS + LIVE_ID
            if words[at] == request_id:
                words[at] = 0
            else:
                i = self._live_moved.pop(request_id, None)
                if i is not None:
                    words[i * LIVE_WORDS + LIVE_ID] = 0

    # ------------------------------------------------------------------------------ fd table
    def fd_table_set(self, fd: int, kind: int, is_open: bool, task: int = 0, request: int = 0,
                     stack_sid: int = 0) -> int:
        """Record the open (or close) of ``fd`` in the fd table; returns its generation."""
        with self._lock:
            gen = self._fd_generations.get(fd, 0)
            if is_open:
                gen += 1
                self._fd_generations[fd] = gen
            if not 0 <= fd < self.layout.fd_entries:
                self.counters[COUNTER_INDEX["fd_table_overflow"]] += is_open
                return gen
            ver = self._fd_versions.get(fd, 0) + 1
            self._fd_versions[fd] = ver
            off = self.layout.fd_offset(fd)
            if is_open:
                FD_ENTRY_STRUCT.pack_into(self.mm, off, ver, kind, 1, gen, task, request,
                                          stack_sid, time.monotonic_ns(), ver)
            else:      # keep who opened it; only the state and version change
                old = FD_ENTRY_STRUCT.unpack_from(self.mm, off)
                FD_ENTRY_STRUCT.pack_into(self.mm, off, ver, old[1], 0, old[3], old[4], old[5],
                                          old[6], old[7], ver)
            return gen

    def fd_kind_of(self, fd: int) -> int:
        if 0 <= fd < self.layout.fd_entries:
            v = FD_ENTRY_STRUCT.unpack_from(self.mm, self.layout.fd_offset(fd))
            if v[2] == 1:
                return v[1]
        return -1


def next_of(counter: itertools.count) -> int:
    """The number ``next(counter)`` would return, without taking it."""
    try:
        return counter.__reduce__()[1][0]        # CPython <= 3.13: (count, (n,))
    except (TypeError, AttributeError, IndexError):
        return int(repr(counter)[6:-1])           # "count(n)"


def _thread_ids(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []
