"""``coroscope export --syscalls``: syscalls per request as a histogram by syscall (eBPF).

The counting is ``diag.syscalls``' (the same eBPF program and probe-slot attribution as
``coroscope syscalls`` and the dashboard's ``--syscalls``): each syscall the target makes is
charged to the request its thread's probe slot names. Unlike a scrape of the probe, this does
cost the target something, a tracepoint per syscall, which is why it is asked for and not on
by default (and needs root and bcc).

A thread of its own attaches the counter (compiling takes seconds) and once a second turns the
per-request counts into one histogram per syscall: for every request finished since attaching
(not running on any thread now) that made at least one syscall, how many of that syscall it
made (0 included, so each syscall's histogram counts the same requests). The eBPF map holds
every request since attaching, so the histograms are cumulative, as Prometheus wants.
"""
from __future__ import annotations

import threading

BUCKETS = (0, 1, 2, 3, 4, 5, 10, 20, 50, 100, 1000)
READ_EVERY_S = 1.0
SLOTS_EVERY_S = 0.02


class SyscallHistograms:
    def __init__(self, pid: int, active_requests):
        self.pid = pid
        self.active_requests = active_requests      # () -> request ids running now
        self.lock = threading.Lock()
        self.histograms: dict[str, tuple[list[tuple[str, int]], int]] = {}
        self.problem: str | None = None
        self.ready = threading.Event()              # the counter is attached
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"coroscope-syscalls-{pid}")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            self._count()
        except Exception as exc:   # noqa: BLE001 - said in the metrics' comments; export goes on
            self.problem = f"the syscall counter failed: {str(exc).splitlines()[0] if str(exc) else exc!r}"
        finally:
            self.ready.set()

    def _count(self) -> None:
        import time

        from diag.syscalls.bpf import BpfCounter, BpfOptions
        from diag.syscalls.collect import Window, bpf_unavailable
        from diag.syscalls.counts import REQUEST, RawCounts

        why = bpf_unavailable()
        if why:
            self.problem = why
            return
        window = Window(self.pid, REQUEST, opened_late=True)
        window.poll()
        if window.view is None:
            self.problem = "the target has no probe to name its requests"
            return
        counter = BpfCounter(BpfOptions(tgid=self.pid, by=REQUEST, sequences=False))
        try:
            window.poll(counter)
            self.ready.set()
            last = time.monotonic()
            while not self._stop.wait(SLOTS_EVERY_S):
                window.poll(counter)
                if time.monotonic() - last < READ_EVERY_S:
                    continue
                last = time.monotonic()
                raw = RawCounts(backend="bpf", by=REQUEST)
                counter.read(raw)
                self._publish(raw, REQUEST)
        finally:
            counter.close()
            window.close()

    def _publish(self, raw, request_kind: str) -> None:
        active = set(self.active_requests())
        per_request = [names for (kind, rid), names in raw.cells.items()
                       if kind == request_kind and rid not in active]
        syscalls = sorted({name for names in per_request for name in names})
        out = {}
        for name in syscalls:
            counts = [names[name].count if name in names else 0 for names in per_request]
            buckets = [(str(float(b)), sum(1 for c in counts if c <= b)) for b in BUCKETS]
            buckets.append(("+Inf", len(counts)))
            out[name] = (buckets, sum(counts))
        with self.lock:
            self.histograms = out

    def snapshot(self) -> dict[str, tuple[list[tuple[str, int]], int]]:
        with self.lock:
            return dict(self.histograms)
