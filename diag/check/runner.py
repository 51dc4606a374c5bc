"""Running one scenario: start the service, send exact loads, read the kernel and /proc.

Phases, in order, each on the built-in load client (diag.doctor.load):
  1. warm-up: a connection opened, used and closed, then the window's connection and
     ``warmup`` requests on it. The closed connection matters: a fresh process reads with
     asyncio's recv(262144) from mmap'ed memory (mmap + mremap + munmap per request) until
     the first EOF frees one whole 256 KiB buffer, which raises glibc's dynamic mmap threshold
     for good. Whether something else did that earlier depends on the heap's history, so
     without this step the count flips between 6 and 3 from run to run; with it, the window
     sees the steady state of a service that has seen a connection close, every time;
  2. the syscall window: counter reset, exactly ``requests`` requests, counter read;
  3. ``cycles`` leak cycles: connect, ``cycle_requests`` per connection, close, then the fd,
     thread and live-task counts once they settle; the growth from the first cycle to the last,
     divided by the cycles between, is the leak per cycle (the first cycle pays for lazy
     set-up). Tasks are counted from the probe file (``TaskCounter``), so only with
     ``trace = true``; without a probe the result says "not measured" and why;
  4. optionally a timed throughput phase for ratio budgets.
Loop warnings come from two places. With ``trace = true`` the target publishes tracepoints
and the dashboard's lints (``diag.warnings``) run on what the probe file holds: a slow step with
its stack. That sees every slow callback on the coroscope runtime but only task steps on stock
asyncio and uvloop (a protocol's ``data_received`` is a plain callback there), so the client's
view is always added: a request that waited longer than ``blocked_loop_ms`` on a service that
answers in a millisecond means the loop was blocked, whatever the loop.
"""
from __future__ import annotations

import time

from diag.doctor.load import LoadError, LoadProcess
from diag.doctor.measure import (SyscallCounter, TaskCounter, count_fds, count_threads,
                                 settled_count, syscall_counting_unavailable)
from diag.doctor.target import Target, expand_command
from diag.errors import TargetGone
from diag.model.check import LoopWarning, Measurement

from .config import Scenario


def _per_cycle(values: list[int]) -> float | None:
    if len(values) < 2:
        return None
    return (values[-1] - values[0]) / (len(values) - 1)


def _attach_probe(pid: int, notes: list[str]):
    """A live source on the target's probe file, or None with a note saying why not."""
    try:
        from diag.live.probe_adapter import open_reader
        from diag.live.source import LiveSource
    except ImportError as exc:
        notes.append(f"probe warnings not available: {exc}")
        return None
    deadline = time.monotonic() + 5
    while True:
        try:
            return LiveSource(pid, open_reader(pid), samplers=[])
        except Exception as exc:  # noqa: BLE001 - the probe file may not exist yet
            if time.monotonic() > deadline:
                notes.append(f"probe warnings not available: {exc}")
                return None
            time.sleep(0.05)


def _probe_warnings(probe, kinds: list[str], notes: list[str]) -> list[LoopWarning]:
    from diag.warnings import LINTS, check
    snapshot = probe.poll()
    found = check(snapshot, only=[k for k in kinds if k in LINTS])
    for missing in getattr(snapshot, "missing", []) or []:
        if missing.startswith("slow callbacks"):
            notes.append(f"probe: {missing}")
    return [LoopWarning(f.lint, f"{f.subject}: {f.message}", "probe") for f in found]


def failed_measurement(scenario: Scenario, variables: dict[str, str], why: str) -> Measurement:
    """What a scenario whose service could not be run at all reports: nothing, and why."""
    return Measurement(
        scenario=scenario.name, command=expand_command(scenario.command, variables),
        loop=scenario.loop, requests=0, syscalls_backend=None, syscalls_per_request=None,
        cycles=0, fds_after_cycle=[], threads_after_cycle=[], leaked_fds_per_cycle=None,
        leaked_threads_per_cycle=None, warnings=[], warnings_backend="none", max_latency_ms=None,
        requests_per_s=None, notes=[why], complete=False, tasks_not_measured=why)


def run_scenario(scenario: Scenario, variables: dict[str, str], want_syscalls: bool = True,
                 progress=lambda line: None) -> Measurement:
    command = expand_command(scenario.command, variables)
    notes: list[str] = []
    latencies: list[float] = []
    syscalls = None
    backend = None
    fds: list[int] = []
    threads: list[int] = []
    tasks: list[int] = []
    tasks_why_not = None
    survivors: list[str] = []
    rate = None
    complete = True
    with Target(command, loop=scenario.loop, trace=scenario.trace) as target:
        probe, probe_findings = None, []
        if scenario.trace:
            probe = _attach_probe(target.pid, notes)
        task_counter = None
        if scenario.leaked_tasks_per_cycle is not None:
            if scenario.trace:
                task_counter = TaskCounter(target.pid)
                tasks_why_not = task_counter.why_not
            else:
                tasks_why_not = ("the scenario runs without trace = true, and live tasks are "
                                 "counted from the probe file tracing publishes")
        counter = None
        if want_syscalls:
            why_not = syscall_counting_unavailable()
            if why_not:
                notes.append(f"syscalls not counted: {why_not}")
            else:
                counter = SyscallCounter(target.pid)
                backend = counter.backend
        try:
            with LoadProcess(target.host, target.port) as load:
                load.connect(1)
                latencies.append(load.requests(10)["max_ms"] or 0.0)
                load.close_connections()
                load.connect(1)
                latencies.append(load.requests(scenario.warmup)["max_ms"] or 0.0)
                if counter is not None:
                    counter.reset()
                    answer = load.requests(scenario.requests)
                    counts = counter.read()
                    latencies.append(answer["max_ms"] or 0.0)
                    done = answer["count"]
                    if answer["errors"] or done != scenario.requests:
                        notes.append(f"syscall window: {done} of {scenario.requests} requests "
                                     f"answered, {answer['errors']} errors")
                    syscalls = {name: round(n / done, 3) for name, n in sorted(counts.items())} \
                        if done else {}
                load.close_connections()
                progress(f"{scenario.name}: syscall window done")
                if probe is not None:
                    probe.poll()  # read the ring buffer before it can wrap
                if task_counter is not None:
                    task_counter.mark()
                for _ in range(scenario.cycles):
                    load.connect(scenario.cycle_connections)
                    latencies.append(load.requests(scenario.cycle_requests)["max_ms"] or 0.0)
                    load.close_connections()
                    fds.append(settled_count(lambda: count_fds(target.pid)))
                    threads.append(settled_count(lambda: count_threads(target.pid)))
                    if task_counter is not None and task_counter.why_not is None:
                        alive = settled_count(task_counter.alive)
                        if alive is not None:
                            tasks.append(alive)
                        task_counter.poll()
                    if probe is not None:
                        probe.poll()
                if task_counter is not None:
                    tasks_why_not = task_counter.why_not
                    if tasks_why_not is None and len(tasks) >= 2 and tasks[-1] > tasks[0]:
                        survivors = task_counter.survivors()
                if scenario.throughput_seconds > 0:
                    load.connect(scenario.throughput_connections)
                    answer = load.run(scenario.throughput_seconds)
                    rate = answer["requests_per_s"]
                    load.close_connections()
            if probe is not None:
                probe_findings = _probe_warnings(probe, scenario.warnings, notes)
        except (FileNotFoundError, ProcessLookupError, TargetGone, LoadError) as exc:
            complete = False
            notes.append(f"the scenario stopped early: {exc}")
        finally:
            if counter is not None:
                counter.close()
            if probe is not None:
                probe.close()
            if task_counter is not None:
                task_counter.close()
        if not target.alive():
            complete = False
            notes.append(f"the service exited with status {target.proc.returncode} mid-scenario")
    worst = max(latencies) if latencies else None
    warnings = list(probe_findings)
    if worst is not None and worst >= scenario.blocked_loop_ms:
        warnings.append(LoopWarning("blocked-loop",
                                    f"a request waited {worst:.0f} ms (threshold "
                                    f"{scenario.blocked_loop_ms:g} ms): the event loop was blocked",
                                    "client-latency"))
    return Measurement(
        scenario=scenario.name, command=command, loop=scenario.loop,
        requests=scenario.requests, syscalls_backend=backend, syscalls_per_request=syscalls,
        cycles=len(fds), fds_after_cycle=fds, threads_after_cycle=threads,
        leaked_fds_per_cycle=_per_cycle(fds), leaked_threads_per_cycle=_per_cycle(threads),
        warnings=warnings,
        warnings_backend="probe + client-latency" if probe is not None else "client-latency", max_latency_ms=worst,
        requests_per_s=rate, notes=notes, complete=complete,
        tasks_after_cycle=tasks, leaked_tasks_per_cycle=None if tasks_why_not else _per_cycle(tasks),
        tasks_not_measured=tasks_why_not, leaked_task_survivors=survivors,
    )
