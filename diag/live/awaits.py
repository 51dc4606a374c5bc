"""What every task awaits, for `coroscope top`: the memory reader, on a thread of its own.

The probe's records say when a task steps, never what it waits on between steps.  The memory
reader (``diag.backtrace.reader``, what `coroscope bt PID` uses) reads every task's await chain
and leaf from outside, without stopping the target, so the dashboard can show them; but one read
of 10,000 tasks costs most of a second of CPU.  Three rules follow.

* It never runs on the UI's thread.  ``AwaitSampler`` reads on a daemon thread and publishes its
  newest result as one object; ``update(state)`` (called at each refresh, like the other
  samplers) only copies that reference into the state.
* It paces itself by what it costs.  After a read that took C seconds of its thread's CPU it
  waits ``C / AWAIT_CPU_SHARE`` (and at least ``MIN_INTERVAL_S``): whatever the task count it
  takes at most that share of one core, the same share the ring reader is given
  (``probe_adapter.DASHBOARD_CPU_SHARE``).  A service of a hundred tasks is read every second;
  one of 10,000 every twenty or so, and the detail panel says how old the chain shown is.
* It says what it could not read.  A task the reader saw change on every re-read is shown as a
  torn read, never with a chain; a read that failed (the target exited, no permission) marks
  every task's awaiting as failed and says why in the missing panel.

Which task is which: the probe names a task by the tracer's counter, the reader by its address.
The tracer keeps ``{id(task): task id}`` (``runtime.tracing.TRACE._ids``, negative until the
first step), and the reader reads that dict too, in the same snapshot, so the join is exact.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from diag.errors import CoroscopeError

from .probe_adapter import DASHBOARD_CPU_SHARE

AWAIT_CPU_SHARE = DASHBOARD_CPU_SHARE
MIN_INTERVAL_S = 1.0
MAX_CHAIN = 40                # frames shown per task (outermost first, the innermost kept)
TORN = "torn read (changed on every re-read)"


@dataclass
class AwaitRead:
    """One read of every task's chain, keyed by the probe's task id."""
    taken_ns: int                                  # monotonic ns when the read began
    by_task: dict[int, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    tasks: int = 0                                 # tasks the reader found
    torn: int = 0
    cpu_s: float = 0.0
    error: str = ""                                # the read failed: why (by_task is empty)

    def summary(self) -> str:
        if self.error:
            return f"read failed: {self.error}"
        return (f"{self.tasks} tasks, {self.torn} torn, {1000 * self.cpu_s:.0f} ms CPU "
                f"(by process_vm_readv; the target is not stopped)")


def probe_ids(proc) -> dict[int, int]:
    """{task address: probe task id} from the tracer's own map, read out of the target."""
    tracing = proc._module_dict("runtime.tracing")
    if not tracing:
        return {}
    py = proc.py
    tracer = py.dict_get(tracing, "TRACE")
    if not tracer:
        return {}
    ids = next((v for k, v in py.instance_dict_items(tracer) if py.str(k, 16) == "_ids"), 0)
    if not ids:
        return {}
    out = {}
    for key, value in py.dict_items(ids):
        out[py.int(key)] = abs(py.int(value))
    return out


def chain_lines(rec: dict) -> tuple[str, ...]:
    """The frames of a task record, outermost first, as "file:line function"."""
    from diag.backtrace.view import formatter
    fmt = formatter()
    frames = rec.get("frames") or []
    lines = tuple(fmt.location(f) for f in frames)
    if len(lines) > MAX_CHAIN:
        lines = lines[:1] + (f"... {len(lines) - MAX_CHAIN + 1} frames ...",) + lines[-(MAX_CHAIN - 2):]
    return lines


def read_once(reader, clock=time.monotonic_ns) -> AwaitRead:
    """Every task's awaiting text and chain, by probe task id, in one snapshot of the target."""
    from diag.backtrace.view import formatter
    fmt = formatter()
    cpu0 = time.thread_time()
    taken = clock()
    proc = reader.process()
    records, counts = reader.records(proc)
    ids = probe_ids(proc)
    names = fmt.names_of(records)
    out = AwaitRead(taken, tasks=len(records), torn=counts["torn"])
    for rec in records:
        tid = ids.get(rec["id"])
        if tid is None:
            continue              # created after the tracer's map was read, or not traced
        if rec.get("state") == "torn":
            out.by_task[tid] = (TORN, ())
        else:
            out.by_task[tid] = (fmt.awaiting_text(rec.get("awaiting") or {}, names), chain_lines(rec))
    out.cpu_s = time.thread_time() - cpu0
    return out


class AwaitSampler:
    """Reads the await chains of ``pid`` on a thread of its own; ``update`` copies the newest."""

    def __init__(self, pid: int, cpu_share: float = AWAIT_CPU_SHARE, start: bool = True,
                 clock=time.monotonic_ns):
        self.pid = pid
        self.cpu_share = cpu_share
        self.clock = clock
        self.latest: AwaitRead | None = None
        self.reads = 0
        self.cpu_s = 0.0                 # the thread's CPU over all reads (the benchmark's)
        self.read_done = threading.Condition()
        self._reader = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coroscope-top-awaits", daemon=True)
        if start:
            self._thread.start()

    def update(self, state) -> None:
        read = self.latest
        if read is None:
            state.set_missing("await chains", "reading them from the target's memory (first read)")
            return
        if read.error:
            state.set_missing("await chains", read.summary())
        else:
            state.missing.pop("await chains", None)
        state.set_awaits(read.taken_ns, read.by_task, read.summary(), failed=bool(read.error))

    def wait_for_reads(self, n: int, timeout: float) -> bool:
        """Block until ``n`` reads are done (for tests and benchmarks; never the UI)."""
        with self.read_done:
            return self.read_done.wait_for(lambda: self.reads >= n, timeout)

    def read(self) -> AwaitRead:
        """One read now, on the caller's thread, published like the thread's own."""
        try:
            if self._reader is None:
                from diag.backtrace.reader import Reader
                self._reader = Reader(self.pid)
            result = read_once(self._reader, self.clock)
        except CoroscopeError as exc:              # gone, no permission, not Python: say it
            result = AwaitRead(self.clock(), error=str(exc))
            self._close_reader()
        except Exception as exc:  # noqa: BLE001 - a reader bug must not take the dashboard down
            result = AwaitRead(self.clock(), error=f"{type(exc).__name__}: {exc}")
        with self.read_done:
            self.latest = result
            self.reads += 1
            self.cpu_s += result.cpu_s
            self.read_done.notify_all()
        return result

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                t0 = time.thread_time()
                self.read()
                spent = time.thread_time() - t0
                if self._stop.wait(max(MIN_INTERVAL_S, spent / self.cpu_share)):
                    break
        finally:
            self._close_reader()

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def close(self) -> None:
        """Stop reading.  Never waits for a read under way (closing is done from the UI's
        thread, and a read of many tasks takes a while): the thread ends after it."""
        self._stop.set()
        if not self._thread.is_alive():
            self._close_reader()
