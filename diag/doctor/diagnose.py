"""One diagnosis of one service on one loop: two short lives of the service, everything measured.

Why two lives and not one: the exact numbers (syscalls per request, fds per cycle) must come
from a target nobody else runs code in, and the await flame graph needs the in-process sampler,
a thread inside the target whose GIL hand-offs and sleeps are syscalls of their own. So:

  life A (exact): tracepoints on (they write shared memory only: no syscalls), nothing else
      inside. In order: the syscall window and the leak cycles (diag.check.runner's method),
      a timed phase on the built-in client for latency over time, then the load phase proper
      (wrk when installed, else the built-in client) with py-spy sampling on-CPU stacks from
      outside. /proc is sampled for fds and threads all along, and the probe file is read
      every 200 ms for slow steps and scheduling lag (the ring buffer would wrap otherwise).
  life B (await): the in-process sampler in await mode, the built-in client for a short
      phase; its file gives the await flame graph (and the on-CPU one when py-spy is missing).

Anything that cannot be had (no bcc, no py-spy, no wrk, no probe file on a loop that does not
publish one) becomes a note "not available: why" in the run, and the rest goes on.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time

from diag.errors import CoroscopeError
from diag.model.doctor import FlameGraph, LatencyStats, Run, TimePoint

from .load import LoadError, LoadProcess, have_wrk, run_wrk
from .measure import (ProcSampler, SyscallCounter, TaskCounter, count_fds, settled_count,
                      syscall_counting_unavailable)
from .target import Target

CYCLES = 4
WINDOW_REQUESTS = 200


def _flame_from_profile(profile, backend: str) -> FlameGraph:
    from diag.flame.formats import render_svg
    total = profile.total()
    _incl, self_w = profile.function_totals()
    top = sorted(self_w.items(), key=lambda kv: -kv[1])[:8]
    graph = FlameGraph(mode=profile.mode, backend=backend,
                       svg=render_svg(profile) if profile.stacks else None,
                       samples=total, top=[(f, w / total) for f, w in top] if total else [],
                       note="" if profile.stacks else "no samples")
    if profile.mode == "await":
        from diag.flame.await_sites import await_sites
        graph.await_sites, graph.idle_share = await_sites(profile.stacks)
    return graph


class _ProbeWatcher:
    """Reads the target's probe file every ``interval`` so no slow step is lost to a wrap."""

    def __init__(self, pid: int, notes: list[str], interval: float = 0.2):
        self.source = None
        self.snapshot = None
        self.interval = interval
        try:
            from diag.live.probe_adapter import open_reader
            from diag.live.source import LiveSource
        except ImportError as exc:
            notes.append(f"loop warnings from the probe: not available: {exc}")
            return
        deadline = time.monotonic() + 5
        while self.source is None:
            try:
                self.source = LiveSource(pid, open_reader(pid), samplers=[])
            except Exception as exc:  # noqa: BLE001 - not there yet, or this loop has none
                if time.monotonic() > deadline:
                    notes.append(f"loop warnings from the probe: not available: {exc}")
                    return
                time.sleep(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="coroscope-probe")
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.snapshot = self.source.poll()

    def finish(self):
        if self.source is None:
            return None
        self._stop.set()
        self._thread.join()
        self.snapshot = self.source.poll()
        self.source.close()
        return self.snapshot


def _latency_from_client(answer: dict, connections: int, duration: float) -> LatencyStats:
    return LatencyStats("built-in client", connections, duration, answer["count"],
                        answer["requests_per_s"], answer["errors"], answer["p50_ms"],
                        answer["p90_ms"], answer["p99_ms"], answer["max_ms"])


def load_paths(load: str, paths: list[str] | None) -> list[str]:
    """What the load requests: the --path values, else a --load URL's path, else "/"."""
    if paths:
        return list(paths)
    if load.startswith(("http://", "https://")):
        from urllib.parse import urlsplit
        parts = urlsplit(load)
        return [(parts.path or "/") + (f"?{parts.query}" if parts.query else "")]
    return ["/"]


def diagnose(label: str, command: list[str], loop: str | None, duration: float,
             load: str = "http", connections: int = 50, progress=lambda line: None,
             paths: list[str] | None = None) -> Run:
    """Run ``command`` twice (see the module docstring) under load; return what was measured."""
    notes: list[str] = []
    flames: list[FlameGraph] = []
    run = Run(label=label, command=command, loop=loop, pid=0, latency=None, latency_p50_ms=[],
              latency_p99_ms=[], fds=[], threads=[], syscalls_backend=None,
              syscalls_per_request=None, fds_after_cycle=[], leaked_fds_per_cycle=None,
              warnings=[], slow_steps=0, scheduling_lag_ms=None, flames=flames, notes=notes)
    mode = "echo" if load == "echo" else "http"
    requested = load_paths(load, paths) if mode == "http" else None
    _life_a(run, load, mode, duration, connections, progress, requested)
    if run.complete:
        _life_b(run, mode, min(duration, 2.0), connections, progress, requested)
    return run


def _statuses_note(answer: dict, what: str, notes: list[str]) -> None:
    """A phase whose answers were not all 2xx/3xx: say which, as errors (never a crash)."""
    bad = {code: n for code, n in (answer.get("statuses") or {}).items()
           if not 200 <= int(code) < 400}
    lost = answer.get("errors", 0) - sum(bad.values())
    parts = [f"{n} answered {code}" for code, n in sorted(bad.items())]
    if lost > 0:
        parts.append(f"{lost} connection{'s' if lost != 1 else ''} lost")
    if parts:
        notes.append(f"errors in {what}: {', '.join(parts)} (of {answer.get('count', 0)} answered)")


def _life_a(run: Run, load: str, mode: str, duration: float, connections: int, progress,
            paths: list[str] | None) -> None:
    notes = run.notes
    # fd tracking on: a leaked fd is named by the line that opened it (it costs the target no
    # syscall: the origins go to the probe's shared memory)
    with Target(run.command, loop=run.loop, trace=True, fdtrack=True) as target:
        run.pid = target.pid
        progress(f"{run.label}: pid {target.pid} listening on {target.url_host}:{target.port} "
                 f"(found from {target.found_by})")
        counter = probe = tasks = None
        latencies = []
        try:
            with LoadProcess(target.host, target.port, mode=mode, paths=paths) as client:
                # warm: a closed connection first (see diag.check.runner); a pre-fork service's
                # workers are up and have served once when this returns
                client.connect(1)
                latencies.append(client.requests(10)["max_ms"])
                client.close_connections()
                pids = target.serving_pids(settle=5.0)
                if pids != [target.pid]:
                    notes.append(f"pid {target.pid} serves through worker processes "
                                 f"{', '.join(map(str, pids))}: syscalls and fds are counted over "
                                 f"all of them, tasks and loop warnings in {pids[0]}")
                why_not = syscall_counting_unavailable()
                counter = None if why_not else SyscallCounter(pids)
                if why_not:
                    notes.append(f"syscalls per request: not available: {why_not}")
                probe = _ProbeWatcher(pids[0], notes)
                tasks = TaskCounter(pids[0])
                with ProcSampler(pids) as sampler:
                    _exact_and_leaks(run, client, counter, tasks, pids, latencies)
                    _timed_and_loaded(run, client, target, load, mode, duration, connections,
                                      progress, latencies, paths)
                run.fds = [TimePoint(s.t, s.fds) for s in sampler.samples]
                run.threads = [TimePoint(s.t, s.threads) for s in sampler.samples]
        except (LoadError, FileNotFoundError, ProcessLookupError, ConnectionError) as exc:
            run.complete = False
            notes.append(f"the run stopped early: {exc}")
        finally:
            if counter is not None:
                counter.close()
            if tasks is not None:
                tasks.close()
            snapshot = probe.finish() if probe is not None else None
        if snapshot is not None:
            _from_snapshot(run, snapshot)
        else:
            # no probe to time the loop's steps: a long wait seen by the client is the only sign
            # (where the probe is, a slow handler that awaits is not a blocked loop: it says so)
            worst = max((l for l in latencies if l is not None), default=None)
            if worst is not None and worst >= 150:
                run.warnings.append(("blocked-loop", f"a request waited {worst:.0f} ms: the event "
                                                     f"loop was blocked", "client-latency"))
        if not target.alive():
            run.complete = False
            notes.append(f"the service exited with status {target.proc.returncode} during the run"
                         + (f"; its last lines: {target.tail()}" if target.tail() else ""))
        target.stop()
        noise = [l.strip() for l in target.output if "Traceback" in l or "Error" in l]
        if noise:
            notes.append("the service printed: " + " | ".join(noise[:3]))


def _exact_and_leaks(run: Run, client, counter, tasks, pids: list[int], latencies: list) -> None:
    """Exact syscalls per request on one warm connection, then the leak cycles."""
    client.connect(1)
    latencies.append(client.requests(50)["max_ms"])
    if counter is not None:
        counter.reset()
        answer = client.requests(WINDOW_REQUESTS)
        counts = counter.read()
        latencies.append(answer["max_ms"])
        _statuses_note(answer, "the exact-syscalls phase", run.notes)
        if answer["count"]:
            run.syscalls_per_request = {
                name: round(n / answer["count"], 3) for name, n in
                sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
            run.syscalls_backend = counter.backend
    client.close_connections()
    tasks.mark()
    before = _open_fds(pids)
    for _ in range(CYCLES):
        client.connect(1)
        latencies.append(client.requests(10)["max_ms"])
        client.close_connections()
        run.fds_after_cycle.append(settled_count(lambda: count_fds(pids)))
        if tasks.why_not is None:
            alive = settled_count(tasks.alive)
            if alive is not None:
                run.tasks_after_cycle.append(alive)
            tasks.poll()
    fa = run.fds_after_cycle
    run.leaked_fds_per_cycle = (fa[-1] - fa[0]) / (len(fa) - 1)
    if run.leaked_fds_per_cycle > 0:
        run.leaked_fd_origins = _leaked_fd_origins(pids, before)
    ta = run.tasks_after_cycle
    if tasks.why_not is None and len(ta) >= 2:
        run.leaked_tasks_per_cycle = (ta[-1] - ta[0]) / (len(ta) - 1)
        if ta[-1] > ta[0]:
            run.leaked_task_survivors = tasks.survivors()
    else:
        why = tasks.why_not or "fewer than 2 cycles were counted"
        run.notes.append(f"tasks leaked per cycle: not available: {why}")


def _open_fds(pids: list[int]) -> set[tuple[int, int, str]]:
    out = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out.add((pid, int(fd), os.readlink(f"/proc/{pid}/fd/{fd}")))
            except OSError:
                continue
    return out


def _leaked_fd_origins(pids: list[int], before: set) -> list[tuple[str, str, int]]:
    """The fds opened during the leak cycles and open after them, grouped by kind and by the
    line of the user's code that opened them (the probe's fd-origin table, filled by fd
    tracking in the target); fds of unknown origin are grouped as such."""
    from diag import probe
    from diag.flame.await_sites import is_user_code
    from diag.fds.inventory import classify_target
    groups: dict[tuple[str, str], int] = {}
    readers = {}
    try:
        for pid, fd, target in sorted(_open_fds(pids) - before):
            if pid not in readers:
                try:
                    readers[pid] = probe.attach(pid, from_start=False)
                except Exception:  # noqa: BLE001 - no probe: origins unknown
                    readers[pid] = None
            origin = readers[pid].fd_origin(fd) if readers[pid] is not None else None
            where = "an unknown place (fd tracking saw no open)"
            if origin is not None:
                lines = [ln for ln in origin.stack.splitlines() if ln.strip()]
                mine = [ln for ln in lines if is_user_code(ln.split(":", 1)[0])]
                where = _relative_line((mine or lines or [where])[0])
            key = (classify_target(target), where)
            groups[key] = groups.get(key, 0) + 1
    finally:
        for reader in readers.values():
            if reader is not None:
                reader.close()
    return [(kind, where, n) for (kind, where), n in sorted(groups.items(), key=lambda kv: -kv[1])]


def _relative_line(line: str) -> str:
    cwd = os.getcwd() + os.sep
    return line[len(cwd):] if line.startswith(cwd) else line


def _timed_and_loaded(run: Run, client, target, load: str, mode: str, duration: float,
                      connections: int, progress, latencies: list, paths: list[str] | None) -> None:
    """Latency over time on the built-in client, then the load phase proper with py-spy."""
    notes = run.notes
    timed = max(1.0, duration / 2)
    client.connect(connections)
    answer = client.run(timed)
    client.close_connections()
    _statuses_note(answer, "the timed phase", notes)
    latencies.append(answer["max_ms"])
    t0 = answer["timeline"][0]["t"] if answer["timeline"] else 0.0
    run.latency_p50_ms = [TimePoint(round(b["t"] - t0, 3), b["p50_ms"]) for b in answer["timeline"]]
    run.latency_p99_ms = [TimePoint(round(b["t"] - t0, 3), b["p99_ms"]) for b in answer["timeline"]]
    run.latency = _latency_from_client(answer, connections, timed)
    progress(f"{run.label}: {duration:g} s of load")
    flame_thread = _PySpyThread(target.pid, duration, notes,
                                subprocesses=target.serving_pids() != [target.pid])
    custom = load not in ("http", "echo") and not load.startswith(("http://", "https://"))
    if custom:
        _run_load_command(load, target, duration, notes)
    elif mode == "http" and have_wrk():
        url = _wrk_url(load, target, paths)
        if paths and len(paths) > 1:
            notes.append(f"wrk requests one URL: {url} (the built-in client's phases went round "
                         f"all {len(paths)} paths)")
        try:
            wrk = run_wrk(url, connections, duration)
            run.latency = LatencyStats(
                "wrk", connections, duration, wrk.requests, wrk.requests_per_s,
                wrk.errors, wrk.percentiles_ms.get("50"), wrk.percentiles_ms.get("90"),
                wrk.percentiles_ms.get("99"), None)
            if wrk.errors:
                notes.append(f"errors in the load phase: wrk counted {wrk.errors} of "
                             f"{wrk.requests} requests as errors (non-2xx/3xx answers or "
                             f"socket errors)")
        except LoadError as exc:
            notes.append(f"wrk: not available: {exc}")
    else:
        if mode == "http":
            notes.append("wrk: not available: not installed; the built-in client drove the load")
        client.connect(connections)
        answer = client.run(duration)
        client.close_connections()
        _statuses_note(answer, "the load phase", notes)
        run.latency = _latency_from_client(answer, connections, duration)
    flame = flame_thread.join()
    if flame is not None:
        run.flames.append(flame)


def _wrk_url(load: str, target, paths: list[str] | None) -> str:
    if load.startswith(("http://", "https://")) and not paths:
        from urllib.parse import urlsplit
        if urlsplit(load).port:
            return load
    path = (paths or ["/"])[0]
    return f"http://{target.url_host}:{target.port}{path if path.startswith('/') else '/' + path}"


def _run_load_command(load: str, target, duration: float, notes: list[str]) -> None:
    """A load command of the user's: {host} {port} {url} filled in, stopped after the duration."""
    import shlex
    import subprocess
    url = f"http://{target.url_host}:{target.port}/"
    try:
        cmd = [part.format(host=target.host, port=target.port, url=url) for part in shlex.split(load)]
    except (KeyError, ValueError) as exc:
        raise CoroscopeError(f"bad --load command {load!r}: {exc}") from None
    try:
        subprocess.run(cmd, timeout=duration, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pass  # the load command ran for the whole duration: what we wanted
    except OSError as exc:
        raise CoroscopeError(f"cannot run the load command {cmd[0]}: {exc.strerror}") from None
    notes.append("latency: from the built-in client's timed phase (the load command reports none)")


def _from_snapshot(run: Run, snapshot) -> None:
    from diag.warnings import check
    run.slow_steps = len(snapshot.slow_steps)
    for f in check(snapshot, only=["blocked-loop", "never-yielded", "self-wakes", "never-awaited"]):
        # a step's stack taken when it had finished (a stock loop's slow step) says nothing
        useful = [e for e in f.evidence if "finished" not in e]
        evidence = f" | {useful[0]}" if useful else ""
        message = f.message.split(", at task ")[0] if "finished" in f.message else f.message
        run.warnings.append((f.lint, f"{f.subject}: {message}{evidence}", "probe"))
    lag = [v for v in snapshot.loop.sched_lag_p99_ms.values if v]
    if lag:
        ordered = sorted(lag)
        run.scheduling_lag_ms = {"p99_median_s": ordered[len(ordered) // 2], "p99_worst_s": ordered[-1]}
    for missing in snapshot.missing:
        if missing.startswith(("slow callbacks", "scheduling lag")):
            run.notes.append(f"probe: {missing}")


class _PySpyThread:
    """py-spy record on the target for ``duration`` seconds, beside the load (a pre-fork
    master with its workers: ``subprocesses``)."""

    def __init__(self, pid: int, duration: float, notes: list[str], subprocesses: bool = False):
        self.result = None
        self.pid = pid
        self.notes = notes
        self.error = None
        try:
            from diag.flame import pyspy
            pyspy.pyspy_executable()
        except Exception as exc:  # noqa: BLE001 - not installed, or the flame module is missing
            notes.append(f"on-CPU flame graph (py-spy): not available: {exc}")
            self.thread = None
            return

        def work():
            try:
                self.result = pyspy.record(pid, duration, rate=200, subprocesses=subprocesses)
            except Exception as exc:  # noqa: BLE001 - reported as a note
                self.error = exc

        self.thread = threading.Thread(target=work, daemon=True, name="coroscope-pyspy")
        self.thread.start()

    def join(self) -> FlameGraph | None:
        if self.thread is None:
            return None
        self.thread.join()
        if self.error is not None or self.result is None:
            self.notes.append(f"on-CPU flame graph (py-spy): not available: {self.error}")
            return None
        from diag.flame.fold import profile_from_collapsed
        profile = profile_from_collapsed(self.result.stacks, "cpu", "py-spy", rate_hz=200,
                                         duration_s=round(self.result.elapsed, 3),
                                         target=f"pid {self.pid}")
        return _flame_from_profile(profile, "py-spy")


def _life_b(run: Run, mode: str, duration: float, connections: int, progress,
            paths: list[str] | None = None) -> None:
    """The await flame graph: the in-process sampler in await mode, under a short load."""
    try:
        from diag.flame.fold import profile_from_sampler
        from diag.flame.sampler import read_sampler_file, sampler_path
    except ImportError as exc:
        run.notes.append(f"await flame graph: not available: {exc}")
        return
    progress(f"{run.label}: await profile")
    with tempfile.TemporaryDirectory(prefix="coroscope-doctor-") as tmp:
        template = os.path.join(tmp, "sampler-{pid}.txt")
        env = {"COROSCOPE_SAMPLER": template, "COROSCOPE_SAMPLER_MODE": "await",
               "COROSCOPE_SAMPLER_RATE": "100"}
        try:
            with Target(run.command, loop=run.loop, env_extra=env) as target:
                with LoadProcess(target.host, target.port, mode=mode, paths=paths) as client:
                    client.connect(connections)
                    client.run(duration)
                    client.close_connections()
                pids = target.serving_pids()
                target.stop()
                # a pre-fork service: the worker that sampled the most (each writes its own file)
                paths_written = [sampler_path(template, p) for p in pids
                                 if os.path.exists(sampler_path(template, p))]
                if not paths_written:
                    raise OSError(f"no sampler file was written by pid {', '.join(map(str, pids))}")
                data = read_sampler_file(max(paths_written, key=os.path.getsize))
        except (CoroscopeError, LoadError, OSError, ValueError) as exc:
            run.notes.append(f"await flame graph: not available: {exc}")
            return
        profile = profile_from_sampler(data, "await", target=f"{run.label}, pid {target.pid}")
        run.flames.append(_flame_from_profile(profile, "sampler"))
        from diag.flame.await_sites import loop_thread_sites
        run.loop_thread_sites = loop_thread_sites(profile_from_sampler(data, "wall").stacks)
        if not any(f.mode == "cpu" and f.svg for f in run.flames):
            run.flames[:] = [f for f in run.flames if f.mode != "cpu"]
            cpu = profile_from_sampler(data, "cpu", target=f"{run.label}, pid {target.pid}")
            run.flames.insert(0, _flame_from_profile(cpu, "sampler"))
