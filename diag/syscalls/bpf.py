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
"""
from __future__ import annotations

from dataclasses import dataclass

from .counts import KIND_BY_CODE, REQUEST, TASK, THREAD, RawCounts, syscall_name

SEQ_LEN = 64           # syscalls kept in order per request (a power of two: the verifier likes masks)
MAX_CELLS = 1 << 17    # (bucket, syscall) pairs; beyond this, calls are counted in `dropped`
MAX_SEQS = 1 << 14     # requests whose sequence is kept

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
BPF_HASH(cells, struct key_t, struct cell_t, MAX_CELLS);
BPF_HASH(errors, struct err_t, u64, 16384);
BPF_HASH(seqs, u64, struct seq_t, MAX_SEQS);     /* request id -> its first calls, in order */
BPF_ARRAY(dropped, u64, 1);                      /* calls whose cell did not fit in `cells` */

static inline int is_read_like(u32 nr) { return READ_LIKE_TEST; }
static inline int is_sized_read(u32 nr) { return SIZED_READ_TEST; }
static inline int is_poll_like(u32 nr) { return POLL_LIKE_TEST; }

static inline struct start_t *cpu_state(void)
{
    int zero = 0;
    return inflight.lookup(&zero);
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

static inline struct cell_t *cell_of(struct key_t *key)
{
    struct cell_t zero = {};
    struct cell_t *cell = cells.lookup_or_try_init(key, &zero);
    if (!cell) {
        int z = 0;
        u64 *d = dropped.lookup(&z);
        if (d)
            __sync_fetch_and_add(d, 1);
    }
    return cell;
}

static inline void append_sequence(struct key_t *key)
{
#if KEEP_SEQUENCES
    if (key->kind == 1) {
        struct seq_t empty = {};
        struct seq_t *seq = seqs.lookup_or_try_init(&key->bucket, &empty);
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
        struct key_t key = {.nr = nr};
        charge(tid, &key);
        struct cell_t *cell = cell_of(&key);
        if (cell)
            __sync_fetch_and_add(&cell->count, 1);
        append_sequence(&key);
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
    struct key_t key = {.nr = (u32)args->id};
    charge(tid, &key);
    struct cell_t *cell = cell_of(&key);
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
        u64 *n = errors.lookup_or_try_init(&ek, &zero);
        if (n)
            __sync_fetch_and_add(n, 1);
    }
    append_sequence(&key);
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
        "READ_LIKE_TEST": f"({_membership(READ_LIKE_NRS.values())})",
        "SIZED_READ_TEST": f"({_membership(SIZED_READ_NRS)})",
        "POLL_LIKE_TEST": f"({_membership(POLL_LIKE_NRS.values())})",
    }
    head = "".join(f"#define {k} {v}\n" for k, v in defines.items())
    return f"/* coroscope syscalls: pid {opts.tgid}, by {opts.by} */\n" + head + _BODY


class BpfCounter:
    """One attached program for one target. ``set_slots`` any time; ``read`` any number of times."""

    def __init__(self, opts: BpfOptions):
        from diag.syscalls.bcc_module import import_bcc  # here: only this backend needs bcc
        BPF = import_bcc().BPF

        self.opts = opts
        self.bpf = BPF(text=bpf_text(opts))  # TRACEPOINT_PROBE attaches on load
        self._slots_set: dict[int, int] = {}

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

    def read(self, raw: RawCounts) -> None:
        """Fill ``raw`` (cells, errors, sequences) from the maps."""
        names: dict[int, str] = {}

        def name(nr: int) -> str:
            if nr not in names:
                names[nr] = syscall_name(nr)
            return names[nr]

        for k, v in self.bpf["cells"].items():
            cell = raw.cell((KIND_BY_CODE[k.kind], k.bucket), name(k.nr))
            cell.count += v.count
            cell.time_ns += v.time_ns
            cell.timed += v.timed
            cell.returned += v.returned
            cell.max_request_size = max(cell.max_request_size, v.reqmax)
        for k, v in self.bpf["errors"].items():
            cell = raw.cell((KIND_BY_CODE[k.kind], k.bucket), name(k.nr))
            cell.errors[k.err] = cell.errors.get(k.err, 0) + v.value
        if self.opts.by == REQUEST and self.opts.sequences:
            raw.sequence_limit = SEQ_LEN
            for k, v in self.bpf["seqs"].items():
                n = min(v.n, SEQ_LEN)
                raw.sequences[k.value] = [name(v.nrs[i]) for i in range(n)]
        lost = self.dropped()
        if lost:
            raw.notes.append(f"{lost} syscalls were not counted: the eBPF map of (bucket, syscall) was full")

    def close(self) -> None:
        self.bpf.cleanup()
