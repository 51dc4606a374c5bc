"""The eBPF backend: every syscall of the target, charged to the request (or task) current on the
calling thread at that moment.

Why it is built this way:
- ``raw_syscalls:sys_enter`` / ``sys_exit`` rather than one probe per syscall: one program sees
  every syscall, the tracepoints are stable, and the syscall number is the map key.
- Everything is counted at exit (count, errno, bytes, time since entry), where the syscall's
  number and result are both known; entry only notes the time. The bucket is read at exit too:
  a thread's slot cannot change while the thread is inside a syscall. exit and exit_group,
  which never return, are counted at entry. Calls in flight when we attach are counted (untimed).
- Cost, measured on getppid (benchmarks/syscalls_overhead.py measures it on the echo server):
  the raw_syscalls tracepoints alone add about 200 ns per call; every map operation in the
  path adds 50-150 ns. So the path has as few as it can: entry time goes in a per-CPU slot
  (a per-thread hash cost ~150 ns more; a call that changes CPU goes untimed, never uncounted),
  and a call costs one lookup of its (bucket, syscall) cell.
- Attribution reads the target's own memory: each thread of a traced process has a slot in the
  probe file (``runtime.probefile``) holding its current task id and request id, written by
  the loop before it runs a task step. User space maps thread id -> slot address (the probe
  file's mapping in /proc/PID/maps plus the slot's offset) into ``slots``; the program reads
  the id with ``bpf_probe_read_user``. The target makes no syscall and takes no lock for it.
  A thread with no slot yet, or a failed read, lands in the "unattributed" bucket, counted
  and reported, never silently dropped.
- The program text is assembled from options (target pid, how to attribute, which field of the
  slot) as #defines over one fixed body, so ``--print-bpf`` shows exactly what runs.
- The first SEQ_LEN syscalls of each request are kept in order for the "most expensive
  requests" list; that costs one map update per call inside a request.
- Counting by request id makes a map entry per (request, syscall): at 15,000 requests/s that is
  some 50,000 new entries a second, and a map that only grows fills in seconds (the first
  version's 131,072 cells overflowed in a 3-second window, and the per-request figures sank).
  So every map exists twice, chosen by ``epoch`` (an array the program reads first), and user
  space drains them in turn: it switches the epoch, and takes the map left behind with one
  lookup-and-delete batch once no program can still be writing it. Syscall tracepoint programs
  run with preemption disabled (kernels since 6.13 disable it around the BPF call of the
  faultable syscall tracepoints, earlier ones ran every tracepoint probe so), so a program that
  read the old epoch has finished microseconds later; the drain waits ``GRACE_S``, thousands of
  times that. The maps then hold one refresh's worth of requests at any rate. The epoch also
  makes the window's edges: outside the window it is 0 (off) and nothing is counted, so
  a window counts what ran inside it and nothing else (``open`` and ``finish``). A cell that still finds its map full is counted by syscall
  alone (``overflow``): counted in the totals, its attribution lost, and the report says how many.
"""
from __future__ import annotations

import ctypes as ct
import errno
import os
import struct
import time
from dataclasses import dataclass

from .counts import KIND_BY_CODE, REQUEST, TASK, THREAD, RawCounts, syscall_name

SEQ_LEN = 64           # syscalls kept in order per request (a power of two: the verifier likes masks)
MAX_CELLS = 1 << 17    # (bucket, syscall) pairs; beyond this, calls are counted in `dropped`
MAX_SEQS = 1 << 14     # requests whose sequence is kept (per epoch)
_OFF_IN_C = 2          # what current_epoch() returns outside the window: count nothing
GRACE_S = 0.02         # from an epoch switch to the drain of the map left behind

# x86_64 numbers (the only architecture here): read-like calls record the size asked for and
# the bytes returned, poll-like calls the events returned.
READ_LIKE_NRS = {"read": 0, "pread64": 17, "readv": 19, "recvfrom": 45, "recvmsg": 47}
SIZED_READ_NRS = (0, 17, 45)          # their 3rd argument is the size asked for
POLL_LIKE_NRS = {"poll": 7, "select": 23, "epoll_wait": 232, "pselect6": 270, "ppoll": 271,
                 "epoll_pwait": 281, "epoll_pwait2": 441}

KIND_CODE = {REQUEST: 1, TASK: 2, THREAD: 3}


@dataclass(frozen=True)
class BpfOptions:
    tgid: int
    by: str = REQUEST               # REQUEST, TASK or THREAD
    slot_field_offset: int = 0      # offset, inside a thread's slot, of the id to charge (request or task)
    sequences: bool = True          # keep the first SEQ_LEN calls of each request


_BODY = r"""
#include <uapi/linux/ptrace.h>

struct key_t { u64 bucket; u32 nr; u32 kind; };
struct cell_t { u64 count; u64 time_ns; u64 timed; u64 returned; u64 reqmax; };
struct err_t { u64 bucket; u32 nr; u32 kind; u32 err; u32 pad; };
struct start_t { u64 ts; u64 reqsize; u32 tid; u32 pad; };
struct seq_t { u32 n; u16 nrs[SEQ_LEN]; };

BPF_HASH(slots, u32, u64, 4096);                 /* tid -> address of the charged id in its slot */
/* The call each CPU is in: its thread and entry time. A call that blocks and resumes on another
   CPU, or whose CPU ran another of the target's threads' calls meanwhile, goes untimed (counted
   all the same: `timed` says how many calls the mean time is over). A per-CPU slot costs a
   fraction of a per-thread map, on every syscall of the target. */
BPF_PERCPU_ARRAY(inflight, struct start_t, 1);
/* Which of the two sets of maps the program writes; user space drains the other. */
BPF_ARRAY(epoch, u32, 1);
BPF_HASH(cells0, struct key_t, struct cell_t, MAX_CELLS);
BPF_HASH(cells1, struct key_t, struct cell_t, MAX_CELLS);
BPF_HASH(errors0, struct err_t, u64, 16384);
BPF_HASH(errors1, struct err_t, u64, 16384);
BPF_HASH(seqs0, u64, struct seq_t, MAX_SEQS);    /* request id -> its first calls, in order */
BPF_HASH(seqs1, u64, struct seq_t, MAX_SEQS);
BPF_HASH(overflow0, u32, u64, 1024);             /* syscall -> calls whose cell did not fit */
BPF_HASH(overflow1, u32, u64, 1024);
BPF_ARRAY(dropped, u64, 1);                      /* calls not counted at all (overflow full) */

static inline int is_read_like(u32 nr) { return READ_LIKE_TEST; }
static inline int is_sized_read(u32 nr) { return SIZED_READ_TEST; }
static inline int is_poll_like(u32 nr) { return POLL_LIKE_TEST; }

static inline struct start_t *cpu_state(void)
{
    int zero = 0;
    return inflight.lookup(&zero);
}

/* The map set to write, 0 or 1; OFF (the array's initial 0 says so): outside the window,
   count nothing. */
static inline u32 current_epoch(void)
{
    int zero = 0;
    u32 *e = epoch.lookup(&zero);
    return (e && *e) ? *e - 1 : OFF;
}

/* Where this thread's call is charged: its slot's id now (the slot cannot change while the
   thread is inside a syscall: only the thread itself writes it). */
static inline void charge(u32 tid, struct key_t *key)
{
#if BY_THREAD
    key->kind = 3;
    key->bucket = tid;
#else
    u64 *addr = slots.lookup(&tid);
    u64 id = 0;
    if (!addr || bpf_probe_read_user(&id, sizeof(id), (void *)*addr) != 0) {
        key->kind = 4;             /* unattributed: no slot known for this thread */
        key->bucket = tid;
    } else if (id == 0) {
        key->kind = 0;             /* the loop: no request or task current */
        key->bucket = 0;
    } else {
        key->kind = KIND;
        key->bucket = id;
    }
#endif
}

static inline struct cell_t *cell_of(struct key_t *key, u32 e)
{
    struct cell_t zero = {};
    struct cell_t *cell = e ? cells1.lookup_or_try_init(key, &zero)
                            : cells0.lookup_or_try_init(key, &zero);
    if (!cell) {
        u64 none = 0;
        u32 nr = key->nr;
        u64 *n = e ? overflow1.lookup_or_try_init(&nr, &none)
                   : overflow0.lookup_or_try_init(&nr, &none);
        if (n) {
            __sync_fetch_and_add(n, 1);
        } else {
            int z = 0;
            u64 *d = dropped.lookup(&z);
            if (d)
                __sync_fetch_and_add(d, 1);
        }
    }
    return cell;
}

static inline void append_sequence(struct key_t *key, u32 e)
{
#if KEEP_SEQUENCES
    if (key->kind == 1) {
        struct seq_t empty = {};
        struct seq_t *seq = e ? seqs1.lookup_or_try_init(&key->bucket, &empty)
                              : seqs0.lookup_or_try_init(&key->bucket, &empty);
        if (seq) {
            u32 i = seq->n;
            if (i < SEQ_LEN)
                seq->nrs[i & (SEQ_LEN - 1)] = (u16)key->nr;
            seq->n = i + 1;
        }
    }
#endif
}

/* Entry: only the time (and the size a read asks for). exit and exit_group never return, so
   they are counted here. */
TRACEPOINT_PROBE(raw_syscalls, sys_enter)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if ((pid_tgid >> 32) != TGID)
        return 0;
    u32 tid = (u32)pid_tgid;
    u32 nr = (u32)args->id;
    if (nr == 60 || nr == 231) {
        u32 e = current_epoch();
        if (e > 1)
            return 0;
        struct key_t key = {.nr = nr};
        charge(tid, &key);
        struct cell_t *cell = cell_of(&key, e);
        if (cell)
            __sync_fetch_and_add(&cell->count, 1);
        append_sequence(&key, e);
        return 0;
    }
    struct start_t *st = cpu_state();
    if (st) {
        st->tid = tid;
        st->ts = bpf_ktime_get_ns();
        st->reqsize = is_sized_read(nr) ? args->args[2] : 0;
    }
    return 0;
}

/* Exit: count, time, bytes or events returned, errno. */
TRACEPOINT_PROBE(raw_syscalls, sys_exit)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if ((pid_tgid >> 32) != TGID)
        return 0;
    u32 tid = (u32)pid_tgid;
    u32 e = current_epoch();
    if (e > 1)
        return 0;
    e &= 1;
    struct key_t key = {.nr = (u32)args->id};
    charge(tid, &key);
    struct cell_t *cell = cell_of(&key, e);
    long ret = args->ret;
    if (cell) {
        __sync_fetch_and_add(&cell->count, 1);
        struct start_t *st = cpu_state();
        if (st && st->ts && st->tid == tid) {   /* else: began before we attached, or moved CPU */
            __sync_fetch_and_add(&cell->time_ns, bpf_ktime_get_ns() - st->ts);
            __sync_fetch_and_add(&cell->timed, 1);
            if (st->reqsize > cell->reqmax)
                cell->reqmax = st->reqsize;
            st->ts = 0;
        }
        if (ret > 0 && (is_read_like(key.nr) || is_poll_like(key.nr)))
            __sync_fetch_and_add(&cell->returned, (u64)ret);
    }
    if (ret < 0 && ret >= -4095) {
        struct err_t ek = {.bucket = key.bucket, .nr = key.nr, .kind = key.kind, .err = (u32)(-ret)};
        u64 zero = 0;
        u64 *n = e ? errors1.lookup_or_try_init(&ek, &zero) : errors0.lookup_or_try_init(&ek, &zero);
        if (n)
            __sync_fetch_and_add(n, 1);
    }
    append_sequence(&key, e);
    return 0;
}
"""


def _membership(nrs) -> str:
    return " || ".join(f"nr == {n}" for n in sorted(nrs)) or "0"


def bpf_text(opts: BpfOptions) -> str:
    """The whole program for these options: what ``--print-bpf`` prints and what is compiled."""
    if opts.by not in KIND_CODE:
        raise ValueError(f"by must be one of {sorted(KIND_CODE)}")
    defines = {
        "TGID": opts.tgid,
        "BY_THREAD": int(opts.by == THREAD),
        "KIND": KIND_CODE[opts.by],
        "KEEP_SEQUENCES": int(opts.sequences and opts.by == REQUEST),
        "SEQ_LEN": SEQ_LEN,
        "MAX_CELLS": MAX_CELLS,
        "MAX_SEQS": MAX_SEQS,
        "OFF": _OFF_IN_C,
        "READ_LIKE_TEST": f"({_membership(READ_LIKE_NRS.values())})",
        "SIZED_READ_TEST": f"({_membership(SIZED_READ_NRS)})",
        "POLL_LIKE_TEST": f"({_membership(POLL_LIKE_NRS.values())})",
    }
    head = "".join(f"#define {k} {v}\n" for k, v in defines.items())
    return f"/* coroscope syscalls: pid {opts.tgid}, by {opts.by} */\n" + head + _BODY


_KEY = struct.Struct("<QII")            # key_t: bucket, nr, kind
_CELL = struct.Struct("<QQQQQ")         # cell_t: count, time_ns, timed, returned, reqmax
_ERR = struct.Struct("<QIIII")          # err_t: bucket, nr, kind, err, pad
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_SEQ_HEAD = struct.Struct("<I")


class _Drainer:
    """Takes every entry of one hash map out at once (BPF_MAP_LOOKUP_AND_DELETE_BATCH) into
    buffers allocated once, as raw bytes: decoding them with struct is what keeps a drain of
    tens of thousands of cells cheap (bcc's own batch call builds a ctypes object per entry)."""

    def __init__(self, table):
        self.table = table
        self.ksz, self.vsz = ct.sizeof(table.Key), ct.sizeof(table.Leaf)
        self.cap = table.max_entries
        self.keys = ct.create_string_buffer(self.ksz * self.cap)
        self.values = ct.create_string_buffer(self.vsz * self.cap)

    def drain(self) -> tuple[bytes, bytes, int]:
        from bcc.libbcc import lib

        batch, cnt, total = ct.c_uint32(0), ct.c_uint32(0), 0
        while total < self.cap:
            cnt.value = self.cap - total
            res = lib.bpf_lookup_and_delete_batch(
                self.table.map_fd, ct.byref(batch) if total else None, ct.byref(batch),
                ct.byref(self.keys, self.ksz * total), ct.byref(self.values, self.vsz * total),
                ct.byref(cnt))
            err = ct.get_errno()
            total += cnt.value
            if res != 0:
                if err != errno.ENOENT:
                    raise OSError(err, f"draining a map: {os.strerror(err)}")
                break
            if cnt.value == 0:
                break
        return self.keys.raw[:self.ksz * total], self.values.raw[:self.vsz * total], total


class BpfCounter:
    """One attached program for one target, its maps drained in turn (see the module's essay).
    ``set_slots`` any time; ``open`` (unless counting from the start), ``switch`` often, and
    ``finish``: the window is from ``open`` to ``finish``."""

    def __init__(self, opts: BpfOptions, counting: bool = True):
        """``counting``: count from the moment the program is attached (a command we start);
        else from ``open()`` (a running process, once its thread slots are known)."""
        from diag.syscalls.bcc_module import import_bcc  # here: only this backend needs bcc
        BPF = import_bcc().BPF

        self.opts = opts
        self.bpf = BPF(text=bpf_text(opts))  # attached on load, counting nothing (epoch 0)
        self._slots_set: dict[int, int] = {}
        self.active = 0                       # the map set the program writes
        self.switched = time.monotonic()
        self.counting = False
        if counting:
            self.open()
        self._drainers: dict[str, _Drainer] = {}
        self._names: dict[int, str] = {}

    def set_slots(self, addresses: dict[int, int]) -> None:
        """tid -> address of the id to charge; threads no longer listed are removed."""
        table = self.bpf["slots"]
        for tid in list(self._slots_set):
            if tid not in addresses:
                try:
                    del table[table.Key(tid)]
                except KeyError:
                    pass
                del self._slots_set[tid]
        for tid, addr in addresses.items():
            if self._slots_set.get(tid) != addr:
                table[table.Key(tid)] = table.Leaf(addr)
                self._slots_set[tid] = addr

    def dropped(self) -> int:
        return sum(v.value for v in self.bpf["dropped"].values())

    # --------------------------------------------------------------------------- epochs
    def _set_epoch(self, map_set: int | None) -> None:
        """Write map set 0 or 1 from now on, or nothing (None)."""
        self.bpf["epoch"][ct.c_int(0)] = ct.c_uint32(0 if map_set is None else map_set + 1)

    def open(self) -> float:
        """Start counting (the window's start edge). Returns the monotonic time."""
        self.active = 0
        self._set_epoch(0)
        self.counting = True
        self.switched = time.monotonic()
        return self.switched

    def switch(self, raw: RawCounts) -> None:
        """Drain into ``raw`` the map set left at the last switch, then make it the one
        written (the other is drained at the next switch, after its grace)."""
        if not self.counting:
            return
        other = 1 - self.active
        wait = self.switched + GRACE_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._drain(other, raw)
        self._set_epoch(other)
        self.active = other
        self.switched = time.monotonic()

    def due(self, every_s: float) -> bool:
        return self.counting and time.monotonic() - self.switched >= every_s

    def finish(self, raw: RawCounts) -> None:
        """The window's end edge: count nothing from now on, and put everything counted
        inside the window in ``raw``."""
        if self.counting:
            self._set_epoch(None)
            self.counting = False
            time.sleep(GRACE_S)
            self._drain(1 - self.active, raw)
            self._drain(self.active, raw)
        lost = self.dropped()
        if lost:
            raw.notes.append(f"{lost} syscalls were not counted: the eBPF maps were full")
        if self.opts.by == REQUEST and self.opts.sequences:
            raw.sequence_limit = SEQ_LEN

    def _name(self, nr: int) -> str:
        name = self._names.get(nr)
        if name is None:
            name = self._names[nr] = syscall_name(nr)
        return name

    def _drainer(self, name: str) -> _Drainer:
        d = self._drainers.get(name)
        if d is None:
            d = self._drainers[name] = _Drainer(self.bpf[name])
        return d

    def _drain(self, i: int, raw: RawCounts | None) -> None:
        name, kinds = self._name, KIND_BY_CODE
        keys, values, n = self._drainer(f"cells{i}").drain()
        if raw is not None and n:
            for (bucket, nr, kind), (count, time_ns, timed, returned, reqmax) in zip(
                    _KEY.iter_unpack(keys), _CELL.iter_unpack(values)):
                raw.add_cell(kinds[kind], bucket, name(nr), count, time_ns, timed, returned, reqmax)
        keys, values, n = self._drainer(f"errors{i}").drain()
        if raw is not None and n:
            for (bucket, nr, kind, err, _), (count,) in zip(_ERR.iter_unpack(keys),
                                                            _U64.iter_unpack(values)):
                raw.add_errors(kinds[kind], bucket, name(nr), err, count)
        keys, values, n = self._drainer(f"overflow{i}").drain()
        if raw is not None and n:
            for (nr,), (count,) in zip(_U32.iter_unpack(keys), _U64.iter_unpack(values)):
                raw.add_overflow(name(nr), count)
        if self.opts.by == REQUEST and self.opts.sequences:
            d = self._drainer(f"seqs{i}")
            keys, values, n = d.drain()
            if raw is not None and n:
                nrs_of = struct.Struct(f"<{SEQ_LEN}H")
                for k, (rid,) in enumerate(_U64.iter_unpack(keys)):
                    off = k * d.vsz
                    (count,) = _SEQ_HEAD.unpack_from(values, off)
                    nrs = nrs_of.unpack_from(values, off + 4)[:min(count, SEQ_LEN)]
                    raw.add_sequence(rid, tuple(name(nr) for nr in nrs), SEQ_LEN)

    def close(self) -> None:
        self.bpf.cleanup()
