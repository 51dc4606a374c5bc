"""``coroscope export --syscalls``: syscalls per request as a histogram by syscall (eBPF).

The counting is ``diag.syscalls``' (the same eBPF program and probe-slot attribution as
``coroscope syscalls`` and the dashboard's ``--syscalls``): each syscall the target makes is
charged to the request its thread's probe slot names. Unlike a scrape of the probe, this does
cost the target something, a tracepoint per syscall, which is why it is asked for and not on
by default (and needs root and bcc).

A thread of its own attaches the counter (compiling takes seconds) and once a second turns the
per-request counts into one histogram per syscall: for every request finished since attaching
that made at least one syscall, how many of that syscall it made (0 included, so each
syscall's histogram counts the same requests). The eBPF maps are drained as the counter goes
(``diag.syscalls.bpf``) and each finished request is folded into the histograms and forgotten,
so the histograms are cumulative, as Prometheus wants, and memory stays flat.
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
        self._folded: dict[str, dict[int, int]] = {}    # syscall -> {calls: finished requests}
        self._requests = 0                              # finished requests folded so far
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
        from diag.syscalls.collect import SWITCH_EVERY_S, Window, bpf_unavailable
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
        raw = RawCounts(backend="bpf", by=REQUEST)
        try:
            window.poll(counter)
            self.ready.set()
            last = time.monotonic()
            while not self._stop.wait(SLOTS_EVERY_S):
                window.poll(counter)
                if counter.due(SWITCH_EVERY_S):
                    counter.switch(raw)
                if time.monotonic() - last < READ_EVERY_S:
                    continue
                last = time.monotonic()
                edge = window.view.edge()
                # two switches: every call made before the edge is then drained, so each
                # request the edge shows finished is folded whole, and at once
                counter.switch(raw)
                counter.switch(raw)
                self._publish(raw, edge)
        finally:
            counter.close()
            window.close()

    def _publish(self, raw, edge) -> None:
        """Fold the requests that have finished into the histograms and forget them (an
        exporter runs for weeks): a request is finished when its id was begun and the target
        no longer lists it as running (``runtime.probefile``, "Requests a window counts")."""
        active = set(edge.live) | set(self.active_requests())
        folded = self._folded
        for rid in [r for r in raw.request_calls if r <= edge.last_id and r not in active]:
            calls = raw.request_calls.pop(rid)
            raw.request_time.pop(rid, None)
            self._requests += 1
            for name, count in calls.items():
                values = folded.setdefault(name, {})
                values[count] = values.get(count, 0) + 1
        out = {}
        n = self._requests
        for name in sorted(folded):
            values = folded[name]
            zeros = n - sum(values.values())          # finished requests that made none of it
            buckets = [(str(float(b)), zeros * (b >= 0) + sum(k for v, k in values.items() if v <= b))
                       for b in BUCKETS]
            buckets.append(("+Inf", n))
            out[name] = (buckets, sum(v * k for v, k in values.items()))
        with self.lock:
            self.histograms = out

    def snapshot(self) -> dict[str, tuple[list[tuple[str, int]], int]]:
        with self.lock:
            return dict(self.histograms)
