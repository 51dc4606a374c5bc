"""``coroscope doctor --pid PID``: a service that is already running, diagnosed from outside.

A service in production cannot be restarted twice under coroscope's control, so this is the
part of the diagnosis that needs no restart: everything is read from the kernel, /proc and the
process's probe (if it runs with COROSCOPE_TRACE=1), and the only thing done to it is the load
the user asks for (``--load URL`` or ``--path``; without either, the service's own traffic is
what is measured). What a started service gives and this cannot is named in the report, with
why: fd and task leaks need connection cycles on a quiet service; the await flame graph needs
the in-process sampler, which only starts with the process.

Syscalls per request here are by request, not by window: the eBPF counter charges each call to
the request running on its thread, read from the probe (``coroscope syscalls --pid``), so the
service's other traffic costs no accuracy. Without a probe they are per thread, and said so.
A pre-fork master's pid covers its workers (diag.workers): syscalls are counted in the first
serving worker, py-spy samples all of them.
"""
from __future__ import annotations

import os
import threading
import time

from diag.errors import CoroscopeError
from diag.model.doctor import LatencyStats, Run, TimePoint

from .load import LoadError, LoadProcess, have_wrk, run_wrk


def diagnose_running(pid: int, duration: float, load: str, connections: int,
                     paths: list[str] | None, progress=lambda line: None) -> Run:
    from diag import workers
    from diag.syscalls.collect import check_pid

    from .diagnose import _from_snapshot, _PySpyThread, load_paths
    from .measure import ProcSampler, syscall_counting_unavailable
    from .target import listening_addresses

    check_pid(pid)
    found = workers.find(pid)
    notes: list[str] = []
    if found.pre_fork:
        notes.append(found.note)
    run = Run(label=f"pid {pid}", command=_cmdline(pid), loop=None, pid=pid, latency=None,
              latency_p50_ms=[], latency_p99_ms=[], fds=[], threads=[], syscalls_backend=None,
              syscalls_per_request=None, fds_after_cycle=[], leaked_fds_per_cycle=None,
              warnings=[], slow_steps=0, scheduling_lag_ms=None, flames=[], notes=notes)
    notes.append("fds and tasks leaked per cycle: not measured: they need connection cycles on "
                 "a service coroscope starts (coroscope doctor -- CMD)")
    notes.append("await flame graph: not available: it needs the in-process sampler, which "
                 "starts with the process (coroscope doctor -- CMD, or coroscope flame --mode "
                 "await -- CMD)")
    addresses = listening_addresses([pid, *workers.descendants(pid)])
    wants_load = load != "http" or bool(paths)
    if wants_load and load not in ("http", "echo") and not load.startswith(("http://", "https://")):
        raise CoroscopeError("--load with --pid takes a URL (or give --path): a load command "
                             "needs a service coroscope started")
    if not addresses and wants_load:
        raise CoroscopeError(f"pid {pid} listens on no TCP port: no load can be sent to it")
    host, port = addresses[0] if addresses else (None, None)
    requested = load_paths(load, paths)

    probe = _probe_source(found.pids[0], notes)
    counted = {}
    why_not = syscall_counting_unavailable()
    counter = None
    if why_not:
        notes.append(f"syscalls per request: not available: {why_not}")
    else:
        counter = threading.Thread(target=_count_syscalls,
                                   args=(found.pids[0], duration + 1.0, counted), daemon=True,
                                   name="coroscope-syscalls")
        counter.start()
        deadline = time.monotonic() + 60
        while not counted.get("attached") and counter.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    progress(f"pid {pid}: measuring for {duration:g} s"
             + (f", load on {host}:{port}{requested[0]}" if wants_load else ", its own traffic"))
    flame = _PySpyThread(pid, duration, notes, subprocesses=found.pre_fork)
    with ProcSampler(found.pids) as sampler:
        if wants_load:
            _load(run, host, port, requested, connections, duration, notes)
        else:
            time.sleep(duration)
            notes.append("latency: not measured: no load was asked for (--load URL or --path)")
    graph = flame.join()
    if graph is not None:
        run.flames.append(graph)
    run.fds = [TimePoint(s.t, s.fds) for s in sampler.samples]
    run.threads = [TimePoint(s.t, s.threads) for s in sampler.samples]
    if counter is not None:
        counter.join(timeout=120)
        _fill_syscalls(run, counted, notes)
    if probe is not None:
        snapshot = probe.poll()
        probe.close()
        _from_snapshot(run, snapshot)
        by_name = snapshot.requests.by_name
        if by_name:
            notes.append("requests seen: " + ", ".join(f"{r.name} {r.ended}" for r in by_name[:5]))
    if not os.path.exists(f"/proc/{pid}"):
        run.complete = False
        notes.append(f"the service exited during the run (pid {pid})")
    return run


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [p.decode(errors="replace") for p in f.read().split(b"\0") if p]
    except OSError:
        return []


def _probe_source(pid: int, notes: list[str]):
    try:
        from diag.live.probe_adapter import open_reader
        from diag.live.source import LiveSource
        return LiveSource(pid, open_reader(pid), samplers=[])
    except Exception as exc:  # noqa: BLE001 - not traced: say so, measure the rest
        notes.append(f"loop warnings and requests from the probe: not available: {exc} "
                     f"(start the service with COROSCOPE_TRACE=1)")
        return None


def _count_syscalls(pid: int, duration: float, out: dict) -> None:
    from diag.syscalls.collect import collect

    def notify(line: str) -> None:
        if line.startswith("counting syscalls"):
            out["attached"] = True
        else:
            out.setdefault("said", []).append(line)
    try:
        out["report"] = collect(pid=pid, duration=duration, notify=notify)
    except Exception as exc:  # noqa: BLE001 - reported as a note
        out["error"] = str(exc)
    out["attached"] = True


def _fill_syscalls(run: Run, counted: dict, notes: list[str]) -> None:
    report = counted.get("report")
    if report is None:
        notes.append(f"syscalls per request: not available: {counted.get('error', 'no report')}")
        return
    notes.extend(f"syscalls: {line}" for line in counted.get("said", []))
    if report.per_request is not None and report.requests:
        run.syscalls_per_request = {name: round(d.mean, 3) for name, d in sorted(
            report.per_request.by_name.items(), key=lambda kv: (-kv[1].mean, kv[0])) if round(d.mean, 3)}
        run.syscalls_backend = f"{report.backend} (by request, {report.requests} requests)"
        for route in report.by_route[:3]:
            notes.append(f"syscalls per request of {route.name}: {route.per_request:.2f} ("
                         + ", ".join(f"{k} {v:.2f}" for k, v in list(route.by_name.items())[:5]) + ")")
    else:
        notes.append("syscalls per request: not available: "
                     + (report.cannot_attribute or "no requests were marked in the window"))


def _load(run: Run, host: str, port: int, paths: list[str], connections: int, duration: float,
          notes: list[str]) -> None:
    from .diagnose import _latency_from_client, _statuses_note
    url_host = f"[{host}]" if ":" in host else host
    try:
        if have_wrk() and len(paths) == 1:
            wrk = run_wrk(f"http://{url_host}:{port}{paths[0]}", connections, duration)
            run.latency = LatencyStats("wrk", connections, duration, wrk.requests,
                                       wrk.requests_per_s, wrk.errors,
                                       wrk.percentiles_ms.get("50"), wrk.percentiles_ms.get("90"),
                                       wrk.percentiles_ms.get("99"), None)
            return
        with LoadProcess(host, port, paths=paths) as client:
            client.connect(connections)
            answer = client.run(duration)
            client.close_connections()
        _statuses_note(answer, "the load", notes)
        run.latency = _latency_from_client(answer, connections, duration)
    except LoadError as exc:
        run.complete = False
        notes.append(f"the run stopped early: {exc}")
