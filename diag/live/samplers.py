"""Producers besides the probe ring: hot paths from the in-process sampler, syscalls per request.

Each sampler has ``update(state)`` (called once per refresh, after the probe records) and
``close()``. A producer that cannot run says why in the state (``set_missing`` or a note on
its panel), never silently.

Hot paths come from the in-process sampler of ``diag.flame.sampler``: the target writes its
cumulative profile to a file (atomically, every half second) named by COROSCOPE_SAMPLER in its
environment; reading that file costs the target nothing. Counts are cumulative since the
target started, so the dashboard shows the difference since it attached.
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter

from diag.model.live import HotPath, HotPaths

from .state import LiveState

TOP_FUNCTIONS = 20


def sampler_file_of(pid: int) -> str | None:
    """The sampler file ``pid`` writes, from its environment (/proc/PID/environ), or None."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    for entry in env:
        if entry.startswith(b"COROSCOPE_SAMPLER="):
            template = entry.split(b"=", 1)[1].decode(errors="replace")
            return template.replace("{pid}", str(pid)) if template else None
    return None


def hot_paths_from(stacks: dict[tuple[str, ...], float], source: str) -> HotPaths:
    """Top functions (self and total samples) and folded stacks from stack -> samples."""
    self_counts: Counter = Counter()
    total_counts: Counter = Counter()
    folded: dict[str, int] = {}
    samples = 0
    for stack, n in stacks.items():
        n = int(n)
        if not stack or n <= 0:
            continue
        samples += n
        self_counts[stack[-1]] += n
        for frame in set(stack):
            total_counts[frame] += n
        key = ";".join(stack)
        folded[key] = folded.get(key, 0) + n
    top = [HotPath(frame, self_counts[frame], total_counts[frame])
           for frame, _ in sorted(total_counts.items(),
                                  key=lambda kv: (-self_counts[kv[0]], -kv[1], kv[0]))[:TOP_FUNCTIONS]]
    return HotPaths(top=top, folded=folded, samples=samples, source=source)


class HotPathSampler:
    def __init__(self, pid: int):
        self.pid = pid
        self.path = sampler_file_of(pid)
        self.first = None           # the profile when we attached: shown counts are since then
        self.mtime = 0.0

    def update(self, state: LiveState) -> None:
        if self.path is None:
            state.set_hot_paths(HotPaths(note=(
                "not available: the target runs no in-process sampler (start it with "
                "COROSCOPE_SAMPLER=/tmp/coroscope-sampler-{pid}.txt, or use coroscope flame --pid)")))
            return
        try:
            from diag.flame.fold import fold_loop_frames
            from diag.flame.sampler import SamplerFileError, read_sampler_file
        except ImportError as exc:
            state.set_hot_paths(HotPaths(note=f"not available: the sampler reader is missing ({exc})"))
            return
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime == self.mtime:
                return
            data = read_sampler_file(self.path)
        except FileNotFoundError:
            state.set_hot_paths(HotPaths(note=f"not available yet: {self.path} not written"))
            return
        except (OSError, SamplerFileError) as exc:
            state.set_hot_paths(HotPaths(note=f"not available: {exc}"))
            return
        self.mtime = mtime
        if self.first is None:
            self.first = data
        window = data.minus(self.first) if data.samples > self.first.samples else data
        stacks: dict[tuple[str, ...], float] = {}
        for (kind, _task, _request, stack), (n, _cpu) in window.counts.items():
            if kind == "thread":
                folded = fold_loop_frames(stack)
                stacks[folded] = stacks.get(folded, 0) + n
        state.set_hot_paths(hot_paths_from(stacks, f"in-process sampler ({self.path})"))


class SyscallsNote:
    """Without --syscalls the dashboard loads no eBPF program (it would cost the target a
    tracepoint per syscall); the panel says so and names the way to turn it on."""

    def __init__(self, pid: int):
        self.pid = pid

    def update(self, state: LiveState) -> None:
        state.set_syscalls({}, "not counted: start `coroscope top --syscalls` (root, bcc; costs "
                               f"the target a tracepoint per syscall) or run `coroscope syscalls "
                               f"--pid {self.pid}`")


class LiveSyscalls:
    """Syscalls per request by name, counted by ``diag.syscalls``' eBPF program while we watch.

    The program is compiled and read in a thread of its own (compiling takes seconds; the screen
    must not wait), which publishes its newest result; ``update`` only copies that result.
    Counts are since the counter attached, divided by the requests done since then."""

    READ_EVERY_S = 1.0
    SLOTS_EVERY_S = 0.02        # as diag.syscalls.collect: new threads get their slot quickly

    def __init__(self, pid: int):
        self.pid = pid
        self.result: tuple[dict[str, float], str] = (
            {}, "starting the eBPF syscall counter (compiling takes a few seconds)")
        self.counted = threading.Event()    # set once a per-request result is published
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coroscope-top-syscalls", daemon=True)
        self._thread.start()

    def update(self, state: LiveState) -> None:
        per_request, note = self.result
        state.set_syscalls(per_request, note)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            self._count()
        except Exception as exc:   # noqa: BLE001 - said on the panel; the dashboard runs on
            self.result = ({}, f"not available: the syscall counter failed: {str(exc).splitlines()[0] if str(exc) else exc!r}")

    def _count(self) -> None:
        from diag.syscalls.bpf import BpfCounter, BpfOptions
        from diag.syscalls.collect import SWITCH_EVERY_S, Window, bpf_unavailable
        from diag.syscalls.counts import REQUEST, RawCounts

        why = bpf_unavailable()
        if why:
            self.result = ({}, f"not available: {why}")
            return
        window = Window(self.pid, REQUEST, opened_late=True)
        window.poll()
        if window.view is None:
            self.result = ({}, "not available: the target has no probe file to name its requests")
            return
        counter = BpfCounter(BpfOptions(tgid=self.pid, by=REQUEST, sequences=False),
                             counting=False)
        try:
            window.poll(counter)
            counter.open()
            window.open_edge()
            self.result = ({}, "counting: no request done yet")
            raw = RawCounts(backend="bpf", by=REQUEST)
            last = time.monotonic()
            while not self._stop.wait(self.SLOTS_EVERY_S):
                window.poll(counter)
                if counter.due(SWITCH_EVERY_S):
                    counter.switch(raw)
                if time.monotonic() - last < self.READ_EVERY_S:
                    continue
                last = time.monotonic()
                done = window.view.edge().done - window.start.done
                # Only the sums by syscall are kept: a panel open for hours at thousands of
                # requests a second must not keep a count per request.
                raw.request_calls.clear()
                raw.request_time.clear()
                if done > 0:
                    self.result = ({n: c.count / done for n, c in sorted(raw.request_cells.items())},
                                   f"eBPF, over {done} requests since attached")
                    self.counted.set()
        finally:
            counter.close()
            window.close()


def default_samplers(pid: int, reader=None, syscalls: bool = False) -> list:
    from .awaits import AwaitSampler
    return [HotPathSampler(pid), LiveSyscalls(pid) if syscalls else SyscallsNote(pid), AwaitSampler(pid)]
