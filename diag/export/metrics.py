"""Prometheus metrics of traced processes, from their probes and /proc, with prometheus_client.

What a scrape reads, and why it costs the target nothing
--------------------------------------------------------
Two kinds of numbers, read in two ways:

- Counts the probe keeps current itself (tasks alive and created, steps, slow steps, requests
  done and in flight, loop iterations): one copy of the counter words from our read-only
  mapping, at scrape time. These are exact: a counter is bumped by the target as the thing
  happens, whether or not we read records.
- Distributions (step durations, ready-queue delay, time blocked in poll, timer lateness,
  request durations by name): the ring's records, folded into cumulative histograms by a
  follower thread between scrapes (the ring holds a fraction of a second of a busy target's
  records, a scrape interval is seconds). The follower decodes within a CPU budget, the
  dashboard's ``ReadBudget``; what it cannot afford it passes over with ``ProbeReader.skip``,
  and what the writer overwrote first is lost. Both are counted and exported
  (``coroscope_probe_records_skipped_total``, ``..._lost_total``): under heavy load the
  histograms are then a sample, their counts below the exact counters, and say so.
- Open fds by kind: ``diag.fds.inventory.count_kinds`` of /proc/PID/fd at scrape time, the
  inventory's own count (the kernel answers; the target runs nothing).

Nothing here writes to the target, signals it or takes a lock it holds: shared memory and
/proc only. The collector is a prometheus_client custom collector: the text format, escaping
and histogram series (``_bucket``/``_sum``/``_count``) are the library's.

Names follow Prometheus's conventions: base units (seconds), ``_total`` for counters,
histograms for durations. Every series has ``pid`` and ``service`` labels. Names borrow from
tokio-metrics where the idea is the same: "scheduled" time is the ready-queue delay here.
A process that exits is dropped at the next scrape: its series end (Prometheus marks them
stale), the others go on.
"""
from __future__ import annotations

import bisect
import struct
import threading
import time
from collections import OrderedDict

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

from diag.errors import CoroscopeError
from diag.fds.inventory import count_kinds
from diag.live.probe_adapter import ReadBudget
from diag.live.source import process_alive
from diag.probe import is_stale, kind_table
from runtime import probefile as pf

from .targets import open_probe, service_name

_R = {k.name: int(k) for k in pf.Rec}
_STEP_BEGIN, _STEP_END = _R["STEP_BEGIN"], _R["STEP_END"]
_REQUEST_BEGIN, _REQUEST_END = _R["REQUEST_BEGIN"], _R["REQUEST_END"]
_LOOP_ITERATION, _TIMER_ADD, _TIMER_FIRE = (_R["LOOP_ITERATION"], _R["TIMER_ADD"],
                                            _R["TIMER_FIRE"])
_TIMER_CANCEL, _NEVER_AWAITED = _R["TIMER_CANCEL"], _R["CORO_NEVER_AWAITED"]
# seq, kind, ns, task, request, a, b, c (the rest padding): as the dashboard's adapter reads
_LEAN = struct.Struct("<QH6xQQQqqq32x")
assert _LEAN.size == pf.RECORD_SIZE
# what a skipped span still hands back: request names (to name later ends) and never-awaited
_KEEP_WHEN_SKIPPING = kind_table((_REQUEST_BEGIN, _NEVER_AWAITED))

FAST_BUCKETS = (1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 5.0)
REQUEST_BUCKETS = (1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
EXPORTER_CPU_SHARE = 0.05     # of one core, per target, for following its ring
KEEP_NAMES = 100_000          # request ids whose name we remember until they end
KEEP_TIMERS = 100_000
MAX_EXITED_SHOWN = 20        # exited pids named in the comments
MAX_REQUEST_NAMES = 200       # distinct names per target; more go to "other" (cardinality)


class Histogram:
    """Cumulative counts in fixed buckets (seconds), as Prometheus wants them."""

    __slots__ = ("bounds", "counts", "total", "sum")

    def __init__(self, bounds):
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0
        self.sum = 0.0

    def observe_ns(self, ns: int) -> None:
        s = ns / 1e9
        i = bisect.bisect_left(self.bounds, s)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += 1
        self.sum += s

    def buckets(self) -> list[tuple[str, float]]:
        out, acc = [], 0
        for bound, n in zip(self.bounds, self.counts):
            acc += n
            out.append((repr(float(bound)), acc))
        out.append(("+Inf", self.total))
        return out


class Target:
    """One traced process: its probe, and the histograms folded from its ring."""

    def __init__(self, pid: int, reader):
        self.pid = pid
        self.reader = reader
        self.service = service_name(pid)
        self.loop_kind = reader.header.loop_kind or "unknown"
        self.start_ticks = reader.header.start_ticks or None
        self.lock = threading.Lock()           # the follower folds, a scrape reads
        self.steps = Histogram(FAST_BUCKETS)
        self.ready_delay = Histogram(FAST_BUCKETS)
        self.poll = Histogram(FAST_BUCKETS)
        self.lag = Histogram(FAST_BUCKETS)
        self.requests: dict[str, Histogram] = {}
        self.never_awaited = 0
        self._names: OrderedDict[int, str] = OrderedDict()
        self._timers: OrderedDict[int, int] = OrderedDict()
        self.budget = ReadBudget(EXPORTER_CPU_SHARE)
        self.gone = False
        self.syscalls = None                   # SyscallHistograms, with --syscalls

    def count_syscalls(self) -> None:
        from .syscalls import SyscallHistograms
        self.syscalls = SyscallHistograms(self.pid, self.active_requests)

    def active_requests(self) -> list[int]:
        with self.lock:
            if self.gone:
                return []
            try:
                return [slot.request for slot in self.reader.threads() if slot.request]
            except (ValueError, OSError):
                return []

    @classmethod
    def open(cls, pid: int) -> "Target | None":
        reader = open_probe(pid)
        return None if reader is None else cls(pid, reader)

    def alive(self) -> bool:
        if self.gone:
            return False
        if not process_alive(self.pid, self.start_ticks) or self.reader.writer_closed() \
                or is_stale(self.reader.header):
            self.gone = True
        return not self.gone

    # ------------------------------------------------------------------ following the ring
    def follow(self) -> None:
        """Fold what the ring holds now into the histograms, within the CPU budget. Under the
        target's lock: a scrape, or closing the reader, waits for one read at most."""
        with self.lock:
            if not self.gone:
                self._follow()

    def _follow(self) -> None:
        reader = self.reader
        cpu0 = time.thread_time()
        try:
            written = reader.records_written()
            backlog = written - reader.next_seq + 1
            allowance = self.budget.plan(backlog)
            if allowance == 0:
                return
            scanned = 0
            if allowance is not None and backlog > allowance:
                before = reader.next_seq
                upto = written - allowance + 1
                for _first, data, marked in reader.skip(upto, _KEEP_WHEN_SKIPPING):
                    for i in marked:
                        self._fold(_LEAN.unpack_from(data, i * pf.RECORD_SIZE))
                scanned = reader.next_seq - before
            scan_cpu = time.thread_time() - cpu0
            decoded = 0
            runs = reader.poll_runs(allowance or (1 << 20))
            for _first, data in runs:
                for rec in _LEAN.iter_unpack(data):
                    self._fold(rec)
                decoded += len(data) // pf.RECORD_SIZE
        except (ValueError, OSError):        # the mapping went away under us: the target is gone
            self.gone = True
            return
        spent = time.thread_time() - cpu0
        self.budget.spent(spent, decoded, spent - scan_cpu, scanned, scan_cpu)

    def _fold(self, rec) -> None:
        _seq, kind, ns, _task, req, a, b, _c = rec
        if kind == _STEP_END:
            self.steps.observe_ns(a)
        elif kind == _STEP_BEGIN:
            if a > 0:                        # 0: not known (first iteration, uvloop)
                self.ready_delay.observe_ns(a)
        elif kind == _LOOP_ITERATION:
            if a > 0:
                self.poll.observe_ns(a)
        elif kind == _REQUEST_BEGIN:
            name = self.reader.string(b) or "unnamed"
            if name not in self.requests and len(self.requests) >= MAX_REQUEST_NAMES:
                name = "other"
            self._names[req] = name
            if len(self._names) > KEEP_NAMES:
                self._names.popitem(last=False)
        elif kind == _REQUEST_END:
            name = self._names.pop(req, "unknown")   # begun before we attached, or skipped
            hist = self.requests.get(name)
            if hist is None:
                hist = self.requests[name] = Histogram(REQUEST_BUCKETS)
            hist.observe_ns(a)
        elif kind == _TIMER_ADD:
            self._timers[a] = b
            if len(self._timers) > KEEP_TIMERS:
                self._timers.popitem(last=False)
        elif kind == _TIMER_FIRE:
            when = self._timers.pop(a, None)
            if when is not None:
                self.lag.observe_ns(max(0, ns - when))
        elif kind == _TIMER_CANCEL:
            self._timers.pop(a, None)
        elif kind == _NEVER_AWAITED:
            self.never_awaited += 1

    def close(self) -> None:
        if self.syscalls is not None:
            self.syscalls.close()
        self.reader.close()


def _labels(t: Target) -> list[str]:
    return [str(t.pid), t.service]


class FleetCollector:
    """A prometheus_client collector over a changing set of targets.

    ``pids``: the processes asked for (None: every traced process, found again at each
    scrape). A follower thread keeps each target's histograms current between scrapes.
    """

    FOLLOW_INTERVAL_S = 0.1

    def __init__(self, pids: list[int] | None = None, syscalls: bool = False):
        self.wanted = pids
        self.syscalls = syscalls
        self.targets: dict[int, Target] = {}
        self.exited: list[int] = []            # pids that exited while exported, oldest first
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(target=self._follow_loop, name="coroscope-follow",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the set of targets
    def refresh(self) -> None:
        """Drop targets that exited; with --all, pick up new ones."""
        from .targets import traced_pids
        with self.lock:
            for pid, t in list(self.targets.items()):
                if not t.alive():
                    with t.lock:
                        t.gone = True
                    t.close()
                    del self.targets[pid]
                    self.exited = (self.exited + [pid])[-MAX_EXITED_SHOWN:]
            candidates = self.wanted if self.wanted is not None else traced_pids()
            for pid in candidates:
                if pid not in self.targets and pid not in self.exited:
                    t = Target.open(pid)
                    if t is not None:
                        self.targets[pid] = t
                        if self.syscalls:
                            t.count_syscalls()

    def _follow_loop(self) -> None:
        while not self._stop.wait(self.FOLLOW_INTERVAL_S):
            with self.lock:
                targets = list(self.targets.values())
            for t in targets:
                t.follow()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self.lock:
            for t in self.targets.values():
                with t.lock:
                    t.gone = True
                t.close()
            self.targets.clear()

    # ------------------------------------------------------------------ a scrape
    def describe(self):
        return []                  # registering must not scrape: the families vary per target

    def comments(self) -> list[str]:
        """What the text would not say otherwise: no target, or targets that ended."""
        out = []
        with self.lock:
            exited = list(self.exited)
            if not self.targets:
                asked = ("pid " + ", ".join(map(str, self.wanted)) if self.wanted
                         else "any process on this host")
                out.append(f"# coroscope: no traced process to export ({asked}: none is "
                           f"alive with a probe; start one with COROSCOPE_TRACE=1)")
        for pid in exited:
            out.append(f"# coroscope: pid {pid} exited; its series ended")
        with self.lock:
            for t in self.targets.values():
                if t.syscalls is not None and t.syscalls.problem:
                    out.append(f"# coroscope: no syscalls per request for pid {t.pid}: "
                               f"{t.syscalls.problem}")
        return out

    def collect(self):
        self.refresh()
        with self.lock:
            targets = sorted(self.targets.values(), key=lambda t: t.pid)
        names = ["pid", "service"]
        info = GaugeMetricFamily("coroscope_target_info", "A traced process being exported "
                                 "(value 1), with its event loop's kind", labels=names + ["loop"])
        gauges = {
            "tasks_alive": GaugeMetricFamily("coroscope_tasks_alive", "Tasks alive now",
                                             labels=names),
            "requests_active": GaugeMetricFamily("coroscope_requests_active",
                                                 "Requests begun and not yet ended",
                                                 labels=names),
        }
        counters = {
            "tasks_created": ("coroscope_tasks_created", "Tasks created"),
            "steps": ("coroscope_task_steps", "Task steps (polls) run"),
            "slow_steps": ("coroscope_slow_steps", "Steps that ran over the slow-step "
                                                   "threshold, blocking the loop"),
            "requests_done": ("coroscope_requests", "Requests done"),
            "loop_iterations": ("coroscope_loop_iterations", "Event loop iterations"),
        }
        counter_families = {k: CounterMetricFamily(n, d, labels=names)
                            for k, (n, d) in counters.items()}
        hists = {
            "steps": HistogramMetricFamily("coroscope_task_step_duration_seconds",
                                           "How long each task step ran (from the ring; a "
                                           "sample when records were skipped or lost)",
                                           labels=names),
            "ready_delay": HistogramMetricFamily(
                "coroscope_task_ready_delay_seconds", "Time a woken task waited in the ready "
                "queue before its step began (tokio's scheduled time; a lower bound)",
                labels=names),
            "poll": HistogramMetricFamily("coroscope_loop_poll_seconds",
                                          "Time each loop iteration spent blocked in poll",
                                          labels=names),
            "lag": HistogramMetricFamily("coroscope_loop_lag_seconds",
                                         "How late timers fired after they were due",
                                         labels=names),
        }
        request_hist = HistogramMetricFamily("coroscope_request_duration_seconds",
                                             "Request durations by request name",
                                             labels=names + ["name"])
        fds = GaugeMetricFamily("coroscope_open_fds", "Open file descriptors by kind "
                                "(/proc/PID/fd, as coroscope fds counts them)",
                                labels=names + ["kind"])
        warnings = CounterMetricFamily("coroscope_warnings", "Problems the probe saw, by kind",
                                       labels=names + ["kind"])
        lost = CounterMetricFamily("coroscope_probe_records_lost", "Ring records overwritten "
                                   "before the exporter read them", labels=names)
        skipped = CounterMetricFamily("coroscope_probe_records_skipped", "Ring records passed "
                                      "over unread to stay within the CPU budget", labels=names)
        syscalls = HistogramMetricFamily("coroscope_request_syscalls", "Syscalls each finished "
                                         "request made, by syscall (eBPF, --syscalls)",
                                         labels=names + ["syscall"])
        for t in targets:
            lab = _labels(t)
            if t.syscalls is not None:
                for name, (buckets, total) in sorted(t.syscalls.snapshot().items()):
                    syscalls.add_metric(lab + [name], buckets, total)
            try:
                values = pf.read_counters(t.reader.mm, t.reader.layout)
                kinds = count_kinds(t.pid)
            except (ValueError, OSError, CoroscopeError):
                continue                      # it went away during this scrape
            info.add_metric(lab + [t.loop_kind], 1)
            gauges["tasks_alive"].add_metric(lab, values["tasks_alive"])
            gauges["requests_active"].add_metric(lab, values["requests_active"])
            for key, fam in counter_families.items():
                fam.add_metric(lab, values[key])
            with t.lock:
                for key, fam in hists.items():
                    h = getattr(t, key)
                    fam.add_metric(lab, h.buckets(), h.sum)
                for name, h in sorted(t.requests.items()):
                    request_hist.add_metric(lab + [name], h.buckets(), h.sum)
                never = t.never_awaited
                lost_n, skipped_n = t.reader.lost, t.reader.skipped
            for kind, n in sorted(kinds.items()):
                fds.add_metric(lab + [kind], n)
            warnings.add_metric(lab + ["slow_step"], values["slow_steps"])
            warnings.add_metric(lab + ["never_awaited"], never)
            warnings.add_metric(lab + ["strings_dropped"], values["strings_dropped"])
            warnings.add_metric(lab + ["fd_table_overflow"], values["fd_table_overflow"])
            lost.add_metric(lab, lost_n)
            skipped.add_metric(lab, skipped_n)
        families = [info, *gauges.values(), *counter_families.values(), *hists.values(),
                    request_hist, syscalls, fds, warnings, lost, skipped]
        yield from (f for f in families if f.samples)     # no target: an empty text
