"""What profiling costs the profiled: echo throughput with and without a flame-graph sampler.

    python -m benchmarks.flame_overhead [--quick] [--loop asyncio|runtime|uvloop] [--json FILE]
    python -m benchmarks.flame_overhead --paired TRIPLETS [--loop L] [--load SHARE|saturated]   # py-spy

Why pinned. The two samplers cost the target in different ways. The in-process sampler runs
inside the target and holds its GIL while it samples: that time is taken from the event loop
wherever the cores are. py-spy (``--nonblocking``, coroscope's default) never stops the target:
it reads the target's memory from its own process with process_vm_readv, so what it can cost
the target is (a) CPU taken from the cores the target would run on, and (b) time the kernel
makes the target wait for something those reads hold. On this 2-core machine the echo server
and its load client each want a core, so unpinned, py-spy's own CPU (~5% of a core) is taken
from one of them and the req/s ratio measures a full machine, not a disturbed target. So:

- **pinned** (the in-process sampler's verdict): the server alone on one core, the load client
  and the profiler on the other. On asyncio the client has room there (its share of a core is
  printed, ~45%), the server is the bottleneck (~98% of its core), so its req/s is what the
  profiler takes from the target's own core.
- **shared**: no affinity: what a machine with no spare core sees. Printed, not judged.
- **pinned+heap**: pinned, with the server's glibc told to keep its 256 KiB recv buffers on
  the heap. Not a way to run anything: it is the experiment that shows *why* py-spy costs the
  pinned target anything (below).

Why py-spy still costs the pinned asyncio server several % (5-12% req/s, 4-16% CPU per
request, over four full runs). One cause is py-spy's and measured: the target's mmap_lock.
Each process_vm_readv takes it for reading (~95 reads per sample, ~9,500 a second at 100 Hz),
and stock asyncio's transport allocates a 256 KiB buffer per recv, which glibc serves with
mmap + mremap + munmap, each taking that lock for writing (~75,000 a second). When they collide
the server blocks in state D until py-spy's read is done, longer when py-spy is preempted by
its neighbour while holding it: the "blocked" column, counted in the kernel with eBPF, is 0 at
baseline and 0.5-2.0 us per request (2-6% of the server's time) with py-spy, and the server's
sleeps go from ~0.1 to 19-30 per 1000 requests. With the buffers on the heap ("pinned+heap")
the blocked time is 0, the sleeps barely change, and the CPU per request moves by -0.5% to
+4%; there the server is 3x faster and the client nears its core's limit (marked *), so that
row's req/s is the client's. The other part is not py-spy's alone: the in-process sampler, which holds the
GIL ~1% of the time, also raises the pinned server's CPU per request by 3-13%, i.e. a
saturated one-thread server on this VM pays far more for being interrupted than the
interruption lasts (no hardware counters in the VM to say whether it is cold caches).
coroscope's runtime loop reads into one reused buffer and has no mmap churn (``--loop
runtime``: blocked 0 with py-spy; but its server is so much cheaper that the echo is limited by
the client or by wake-up latency in our runs, so its req/s ratio is no measure of the server).

Paired windows (``--paired TRIPLETS``): py-spy's verdict. Separate rounds resolve no cost
under about 5% here, so one server is loaded once and two py-spys stay attached: one to the
server, one to a *decoy* (an idle echo server on the load's core). In each triplet of short
windows, in random order, neither samples, the target's samples, or the decoy's (the others
are stopped with SIGSTOP). Over hundreds of triplets, each condition's totals against the
"neither" windows' totals have a standard error near 0.4% (bootstrap over triplets).

Why a paced load, and the decoy. A saturating ping-pong load needs as much CPU as the server
(both sides pay for the same syscalls and the same loopback TCP): pinned, the load's core is
~90% busy, so py-spy's ~4% of a core comes out of the load, and the server's req/s falls with
it. The decoy shows it: py-spy sampling an idle process costs the saturated server as much as
py-spy sampling it (runtime, 150 triplets: req/s 0.967 +- 0.010 with the decoy sampled, 0.981
+- 0.010 with the target sampled). That is the cost of a full 2-core machine, not of
profiling. So the load is offered at a fixed rate (``benchmarks.echo_client.Pacer``; by
default 40% of the req/s a saturating load reached first), which leaves its core room for
py-spy, and the figure judged is the server's *busy time per request*: its CPU (schedstat)
plus its time blocked in the kernel (state D, eBPF), the inverse of its capacity. It includes
any wait py-spy's reads impose (the mmap_lock above) and any cache or lock effect of being
read. A cost py-spy adds per second weighs more per request at part load than at full load,
so the figure errs against py-spy. The load must leave its core room: the runtime's server
is so cheap that its load needs ~50% of a core at 40%; asyncio's ~40% at 75%. A load not
held (fewer served than offered) is said, and then nothing is judged. ``--load saturated``
gives the req/s figure under a saturating load instead. Blocked time: in the saturated runs
above, py-spy, preempted by the busy load while holding the target's mmap_lock, makes asyncio's
server wait 0.5-2 us per request; with the load paced it is 0.00.

Each round runs, per setup, the baseline, every variant, and the baseline again; a variant's
cost is its ratio to the mean of the two baselines around it, and the median over rounds is
reported (a neighbour that slows the machine for a while slows both sides of a ratio;
baselines alone swing by +-25% from run to run here).

Columns: "cost" is 1 - req/s ratio; "CPU cost" the server's CPU per request ratio - 1;
"server"/"client" the share of a core each used; "blocked" the server's time blocked in the
kernel per request; "sleeps/1k" its voluntary context switches per 1000 requests; "profiler
CPU" the profiler's own CPU per second of wall time, measured exactly (the sampler thread's
CPU clock, py-spy's schedstat); "GIL held" the share of wall time the in-process sampler held
the GIL (its direct cost to the loop).

Variants: the in-process sampler at 100 Hz in cpu and await mode (injected through
sitecustomize, as ``coroscope flame -- CMD`` does); py-spy at 100 Hz with exactly the flags
coroscope passes (``diag.flame.pyspy.record_command``), with ``--lines`` (the running line, as
before coroscope passed ``--function``: more reads per sample), and blocking.

Targets (issue 7): the in-process sampler at 100 Hz under 3% of echo throughput (judged in
the rounds, pinned); py-spy mode under 1%, judged with ``--paired``. A CPU-bound part measures
the CPU the target's own threads spend on a fixed amount of asyncio work with each profiler
attached (short: noisy on a shared machine).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.procs import kill_if_running, pinned_to, stop_server, two_cores
from diag.flame.pyspy import record_command

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = ROOT / "diag" / "bootstrap"
CONNS = 50
RATE = 100
# a load client using more of its core than this, in any run of a row, may have been the limit:
# that row's req/s is marked, and measures the client's core, not the server's
CLIENT_BUSY = 0.8


@dataclass(frozen=True)
class Variant:
    name: str
    server_env: dict = field(default_factory=dict)   # "{tmp}" is replaced by the run's directory
    pyspy: bool = False                               # attach py-spy with coroscope's own flags
    blocking: bool = False                            # py-spy pauses the target per sample
    lines: bool = False                               # py-spy labels the running line (``--lines``)


_SAMPLER = {"COROSCOPE_SAMPLER": "{tmp}/s-{pid}.txt", "COROSCOPE_SAMPLER_RATE": str(RATE)}
BASELINE = Variant("baseline")
SAMPLER_CPU = Variant(f"sampler cpu {RATE} Hz", _SAMPLER)
SAMPLER_AWAIT = Variant(f"sampler await {RATE} Hz", {**_SAMPLER, "COROSCOPE_SAMPLER_MODE": "await"})
PYSPY = Variant(f"py-spy {RATE} Hz", pyspy=True)
PYSPY_BLOCKING = Variant(f"py-spy {RATE} Hz blocking", pyspy=True, blocking=True)
PYSPY_LINES = Variant(f"py-spy {RATE} Hz --lines", pyspy=True, lines=True)   # before --function



@dataclass(frozen=True)
class Setup:
    """Where the processes run and what the server's environment adds, for the baselines and
    the variants of one setup alike (each round adds a baseline before and after them)."""
    name: str
    pinned: bool                                      # server on one core, client + profiler on the other
    variants: tuple
    server_env: dict = field(default_factory=dict)


# glibc keeps allocations under mmap_threshold on the heap, and trims the heap only past
# trim_threshold: asyncio's 256 KiB recv buffer then costs no mmap/mremap/munmap (and no brk)
HEAP_RECV = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864"}
SETUPS = [
    Setup("pinned", True, (SAMPLER_CPU, SAMPLER_AWAIT, PYSPY, PYSPY_LINES, PYSPY_BLOCKING)),
    Setup("shared", False, (SAMPLER_CPU, PYSPY)),
    # why py-spy costs the pinned target anything: the same, without the mmap churn
    Setup("pinned+heap", True, (PYSPY,), HEAP_RECV),
]


def _threads_sum(pid: int, read_one) -> int:
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            total += read_one(f"/proc/{pid}/task/{tid}")
        except (OSError, ValueError, IndexError):
            pass
    return total


def _schedstat_ns(task_dir: str) -> int:
    with open(f"{task_dir}/schedstat") as f:
        return int(f.read().split()[0])


def _voluntary_switches(task_dir: str) -> int:
    with open(f"{task_dir}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads, in ns resolution (schedstat), not 10 ms ticks."""
    return _threads_sum(pid, _schedstat_ns) / 1e9


def voluntary_switches(pid: int) -> int:
    return _threads_sum(pid, _voluntary_switches)


class BlockedTime:
    """Time the server's threads spend blocked uninterruptibly (state D), counted in the kernel.

    A request-loop thread on its own core is either running, waiting in epoll for work, or
    blocked in the kernel on something another process holds. The last is the only way py-spy,
    which runs elsewhere, can stop the target, and it is exact where req/s ratios are not:
    neighbours' load does not enter it. An eBPF program (bcc) notes when a thread of the
    watched process switches out in state D and adds the time until its wake-up. Needs root
    and bcc; without them :meth:`open` returns None and the column stays empty.
    """

    PROGRAM = r"""
    BPF_HASH(since, u32, u64);
    BPF_ARRAY(totals, u64, 3);    /* [0] the watched tgid (0: none), [1] ns blocked, [2] times */
    TRACEPOINT_PROBE(sched, sched_switch) {
        int watched = 0;
        u64 *tgid = totals.lookup(&watched);
        if (!tgid || *tgid == 0 || (bpf_get_current_pid_tgid() >> 32) != *tgid)
            return 0;
        if (!(args->prev_state & 2))          /* TASK_UNINTERRUPTIBLE */
            return 0;
        u32 tid = args->prev_pid;
        u64 now = bpf_ktime_get_ns();
        since.update(&tid, &now);
        return 0;
    }
    TRACEPOINT_PROBE(sched, sched_wakeup) {
        u32 tid = args->pid;
        u64 *start = since.lookup(&tid);
        if (!start)
            return 0;
        u64 blocked = bpf_ktime_get_ns() - *start;
        since.delete(&tid);
        int ns = 1, times = 2;
        u64 *total = totals.lookup(&ns);
        if (total)
            __sync_fetch_and_add(total, blocked);
        u64 *count = totals.lookup(&times);
        if (count)
            __sync_fetch_and_add(count, 1);
        return 0;
    }
    """

    def __init__(self, bpf):
        import ctypes

        self._bpf, self._totals, self._key, self._u64 = bpf, bpf["totals"], ctypes.c_int, ctypes.c_uint64

    @classmethod
    def open(cls) -> "BlockedTime | None":
        if os.geteuid() != 0:
            return None
        try:
            from bcc import BPF

            return cls(BPF(text=cls.PROGRAM))
        except Exception:                      # no bcc, no headers, no tracefs: no column
            return None

    def watch(self, pid: int) -> None:
        """Count ``pid``'s threads from now on, from zero."""
        for i in (1, 2):
            self._totals[self._key(i)] = self._u64(0)
        self._totals[self._key(0)] = self._u64(pid)

    def read(self) -> tuple[float, int]:
        """(seconds blocked, times blocked) since :meth:`watch`."""
        return self._totals[self._key(1)].value / 1e9, self._totals[self._key(2)].value

    def close(self) -> None:
        self._bpf.cleanup()


def _server_env(variant: Variant, tmp: str, setup_env: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BOOTSTRAP), str(ROOT), env.get("PYTHONPATH")]))
    env.update(setup_env or {})
    env.update({k: v.replace("{tmp}", tmp) for k, v in variant.server_env.items()})
    return env


def _start_pyspy(pid: int, tmp: str, variant: Variant, cpu: int | None) -> subprocess.Popen:
    cmd = record_command(pid, os.path.join(tmp, f"spy-{pid}.txt"), RATE, blocking=variant.blocking,
                         lines=variant.lines)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=pinned_to(cpu))


def _stop_pyspy(spy: subprocess.Popen | None) -> None:
    if spy is None:
        return
    spy.send_signal(2)                 # py-spy writes its profile on SIGINT
    try:
        spy.wait(timeout=10)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def measure(variant: Variant, setup: Setup, loop: str, warmup: float, seconds: float, tmp: str,
            blocked: BlockedTime | None = None) -> dict:
    """One fresh server, loaded for ``seconds`` by the echo client, with ``variant`` attached."""
    server_cpu, load_cpu = two_cores() if setup.pinned else (None, None)
    env = _server_env(variant, tmp, setup.server_env)
    server, port = _start_echo_server(loop, env, server_cpu)
    spy = None
    try:
        client_env = {k: v for k, v in env.items()
                      if not k.startswith("COROSCOPE_") and k not in setup.server_env}
        client = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.echo_client", str(port), str(CONNS), str(warmup), str(seconds),
             "sync"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=client_env, cwd=ROOT,
            preexec_fn=pinned_to(load_cpu))
        try:
            if client.stdout.readline().split() != ["ready"]:
                raise RuntimeError("echo client did not start")
            if variant.pyspy:
                spy = _start_pyspy(server.pid, tmp, variant, load_cpu)
                time.sleep(0.3)                # attached before the window opens
            if blocked is not None:
                blocked.watch(server.pid)
            before = (cpu_seconds(server.pid), voluntary_switches(server.pid), cpu_seconds(client.pid),
                      cpu_seconds(spy.pid) if spy else 0.0)
            client.stdin.write("go\n")
            client.stdin.flush()
            line = client.stdout.readline().split()
            after = (cpu_seconds(server.pid), voluntary_switches(server.pid), cpu_seconds(client.pid),
                     cpu_seconds(spy.pid) if spy else 0.0)
            blocked_s = blocked.read()[0] if blocked is not None else None
            client.stdin.write("bye\n")
            client.stdin.flush()
            if len(line) != 4 or line[0] != "end":
                raise RuntimeError(f"echo client failed: {line}")
            requests, elapsed = int(line[1]), float(line[3])
            client.wait(timeout=30)
        finally:
            kill_if_running(client)
    finally:
        _stop_pyspy(spy)
        stop_server(server)
    server_s, switches, client_s, spy_s = (a - b for a, b in zip(after, before))
    result = {"variant": variant.name, "setup": setup.name, "rps": requests / elapsed,
              "cpu_us_per_request": 1e6 * server_s / max(requests, 1),
              "server_util": server_s / elapsed, "client_util": client_s / elapsed,
              "sleeps_per_1k": 1000 * switches / max(requests, 1),
              "blocked_us_per_request": None if blocked_s is None else 1e6 * blocked_s / max(requests, 1),
              "profiler_cpu": spy_s / elapsed if spy else None, "gil_held": None, "sample_us": None}
    if "COROSCOPE_SAMPLER" in variant.server_env:
        from diag.flame.sampler import read_sampler_file, sampler_path

        data = read_sampler_file(sampler_path(env["COROSCOPE_SAMPLER"], server.pid))
        result.update(profiler_cpu=data.self_cpu / data.elapsed, gil_held=data.gil_held / data.elapsed,
                      sample_us=1e6 * data.gil_held / max(data.samples, 1))
    return result


# --------------------------------------------------------------- paired windows (--paired)
# In each triplet of windows one of these is sampling and the others are stopped (SIGSTOP);
# "decoy" is py-spy sampling an idle Python process on the load's core: the same CPU taken
# from that core, nothing read from the target
CONDITIONS = ("none", "target", "decoy")
PACED_SHARE = 0.4
# fewer complete triplets than this get figures but no verdict: a bootstrap over a handful of
# triplets understates the spread (4 triplets once read -2.4% +- 0.9%); over hundreds it is a
# fair estimate (here: +-0.5% at 600 triplets, +-0.26% at 1,800)
MIN_JUDGED_TRIPLETS = 300


def _load_process(port: int, conns: int, counter, cpu: int | None, rate: float | None) -> None:
    """The load for paired windows (a forked child), each reply added to ``counter`` (shared
    memory), so the parent reads requests done at any moment without a word to the client.
    ``rate`` None: benchmarks.echo_client's Pinger, saturating; else its Pacer at that rate."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    import uvloop

    from benchmarks.echo_client import Pacer, Pinger, connect

    def replied() -> bool:
        counter.value += 1
        return True

    async def load():                            # runs until the process is terminated
        if rate is not None:
            pacer = Pacer(rate, replied)
            await pacer.connect(port, conns)
            await pacer.run()
        else:
            for pinger in await connect(port, conns, lambda: Pinger(replied)):
                pinger.send()
            await asyncio.Event().wait()
    uvloop.run(load())


def _start_load(port: int, conns: int, cpu: int | None, rate: float | None):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    counter = context.RawValue("q", 0)
    process = context.Process(target=_load_process, args=(port, conns, counter, cpu, rate), daemon=True)
    process.start()
    return process, counter


def _stop_load(process) -> None:
    process.terminate()
    process.join(timeout=10)


def _start_echo_server(loop: str, env: dict, cpu: int | None) -> tuple[subprocess.Popen, int]:
    """An echo server on ``loop``, pinned to ``cpu``, and the port it listens on (a server that
    does not say it is stopped before the error goes up)."""
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.echo_server", "--loop", loop],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                              preexec_fn=pinned_to(cpu))
    try:
        return server, int(server.stdout.readline())
    except BaseException:
        stop_server(server)
        raise


def measure_paired(loop: str, triplets: int, window: float, tmp: str, share: float | None = PACED_SHARE) -> dict:
    """py-spy's cost measured within one run, in triplets of windows.

    One echo server is pinned to its core; the load, one py-spy attached to the server and one
    attached to a decoy (an idle echo server) share the other core. In each triplet of windows,
    in random order: no py-spy sampling, py-spy sampling the target, py-spy sampling the decoy
    (the others stopped with SIGSTOP). Each triplet gives the ratio of the server's figures
    with each py-spy sampling to those with none; drift of the machine hits all three windows
    alike, so the mean over hundreds of triplets resolves a cost far smaller than separate runs.

    ``share``: the load offered, as a share of the server's capacity (measured first, with a
    saturating load): the figure judged is then the server's busy time per request (its CPU
    plus its time blocked in the kernel, state D), whose inverse is its capacity. None: a
    saturating load, and the figure is req/s itself.
    """
    server_cpu, load_cpu = two_cores() or (None, None)
    server, port = _start_echo_server(loop, _server_env(BASELINE, tmp), server_cpu)
    decoy = load = blocked = None
    spies: dict[str, subprocess.Popen] = {}
    windows: list[dict] = []
    capacity = offered = None
    try:
        decoy, _ = _start_echo_server(loop, _server_env(BASELINE, tmp), load_cpu)
        blocked = BlockedTime.open()
        if share is not None:
            load, counter = _start_load(port, CONNS, load_cpu, None)
            time.sleep(1.0)
            r0, t0 = counter.value, time.monotonic()
            time.sleep(2.0)
            capacity = (counter.value - r0) / (time.monotonic() - t0)
            _stop_load(load)
            offered = share * capacity
            # at the offered rate with the server's latency far under a millisecond, a few
            # hundred connections never run out of idle ones
            load, counter = _start_load(port, 4 * CONNS, load_cpu, offered)
        else:
            load, counter = _start_load(port, CONNS, load_cpu, None)
        spies = {"target": _start_pyspy(server.pid, tmp, PYSPY, load_cpu),
                 "decoy": _start_pyspy(decoy.pid, tmp, PYSPY, load_cpu)}
        if blocked is not None:
            blocked.watch(server.pid)
        time.sleep(2.0)                          # connected, warmed up, both py-spys attached

        def snapshot(spy: subprocess.Popen | None) -> tuple:
            # the clock, the requests and the server's times first and together: the rest may wait
            return (counter.value, cpu_seconds(server.pid), blocked.read()[0] if blocked else 0.0,
                    time.monotonic(), cpu_seconds(spy.pid) if spy else 0.0, cpu_seconds(load.pid))

        def one_window(condition: str, triplet: int) -> dict:
            for name, spy in spies.items():
                os.kill(spy.pid, signal.SIGCONT if name == condition else signal.SIGSTOP)
            time.sleep(0.05)                     # a stopped py-spy is off the core
            spy = spies.get(condition)
            before = snapshot(spy)
            time.sleep(window)
            requests, server_s, blocked_s, elapsed, spy_s, load_s = (a - b for a, b in zip(snapshot(spy), before))
            return {"triplet": triplet, "condition": condition, "requests": requests, "elapsed_s": elapsed,
                    "busy_s": server_s + blocked_s, "rps": requests / elapsed,
                    "busy_us_per_request": 1e6 * (server_s + blocked_s) / max(requests, 1),
                    "blocked_us_per_request": 1e6 * blocked_s / max(requests, 1),
                    "profiler_cpu": spy_s / elapsed, "load_cpu": load_s / elapsed}

        order = random.Random(7)
        for i in range(triplets):
            conditions = list(CONDITIONS)
            order.shuffle(conditions)
            windows += [one_window(c, i) for c in conditions]
    finally:
        for spy in spies.values():
            os.kill(spy.pid, signal.SIGCONT)
            _stop_pyspy(spy)
        if load is not None:
            _stop_load(load)
        if blocked is not None:
            blocked.close()
        stop_server(server)
        if decoy is not None:
            stop_server(decoy)
    report = {"loop": loop, "triplets": triplets, "window_s": window, "share": share,
              "capacity_rps": capacity, "offered_rps": offered, "blocked_counted": blocked is not None,
              "windows": windows, "conditions": summarize_paired(windows)}
    judged = report["conditions"]["target"]["rps_ratio" if share is None else "busy_ratio"]
    cost, se = (1 - judged["ratio"], judged["se"]) if share is None else (judged["ratio"] - 1, judged["se"])
    held = share is None or (report["conditions"]["none"]["rps"] >= 0.98 * offered
                             and report["conditions"]["target"]["rps_ratio"]["ratio"] >= 0.99)
    report.update(cost=cost, cost_se=se, load_held=held,
                  verdict=paired_verdict(cost, se, held, report["conditions"]["complete_triplets"]))
    return report


def paired_verdict(cost: float, se: float, held: bool, complete_triplets: int) -> str:
    """"met" only if the cost is under 1% with two standard errors to spare, over enough
    triplets, the load held; "MISSED" if not; "not judged" when there are too few triplets."""
    if complete_triplets < MIN_JUDGED_TRIPLETS:
        return f"not judged ({complete_triplets} complete triplets, a verdict needs {MIN_JUDGED_TRIPLETS})"
    return "met" if held and cost + 2 * se < 0.01 else "MISSED"


def summarize_paired(windows: list[dict], resamples: int = 500) -> dict:
    """Per condition: its windows' medians and, against the "none" windows, the ratio of its
    totals: req/s as all its requests over all its seconds, busy time per request as all its
    busy seconds over all its requests. A mean of per-window ratios would not do: windows this
    short vary by ~10%, and the mean of a ratio of noisy figures is biased upwards by about
    the square of that (~0.7% here). The standard error comes from resampling the triplets
    (a bootstrap), which keeps each triplet's windows together."""
    triplets: dict[int, dict[str, dict]] = {}
    for w in windows:
        triplets.setdefault(w["triplet"], {})[w["condition"]] = w
    complete = [t for t in triplets.values() if len(t) == len(CONDITIONS)]

    def ratios(sample: list[dict], condition: str) -> tuple[float, float]:
        total = {c: [sum(t[c][k] for t in sample) for k in ("requests", "elapsed_s", "busy_s")] for c in
                 (condition, "none")}
        (req, secs, busy), (req0, secs0, busy0) = total[condition], total["none"]
        return (req / secs) / (req0 / secs0), (busy / max(req, 1)) / (busy0 / max(req0, 1))

    draw = random.Random(0)
    resampled = [[draw.choice(complete) for _ in complete] for _ in range(resamples)] if len(complete) > 1 else []
    summary: dict = {"complete_triplets": len(complete)}
    for condition in CONDITIONS:
        mine = [w for w in windows if w["condition"] == condition]
        row = {k: statistics.median(w[k] for w in mine)
               for k in ("rps", "busy_us_per_request", "blocked_us_per_request", "profiler_cpu", "load_cpu")}
        row["server_busy"] = statistics.median(w["busy_s"] / w["elapsed_s"] for w in mine)
        if condition != "none" and complete:
            estimate = ratios(complete, condition)
            spread = [ratios(sample, condition) for sample in resampled]
            for i, key in enumerate(("rps_ratio", "busy_ratio")):
                row[key] = {"ratio": estimate[i],
                            "se": statistics.stdev(r[i] for r in spread) if spread else float("inf")}
        summary[condition] = row
    return summary


def render_paired(p: dict) -> str:
    if p["share"] is None:
        load = "a saturating load (50 connections, one request in flight each)"
    else:
        load = (f"a paced load of {p['offered_rps']:,.0f} req/s, {p['share']:.0%} of the server's capacity "
                f"({p['capacity_rps']:,.0f} req/s)")
    head = (f"{'py-spy 100 Hz sampling':<24} {'req/s':>8} {'ratio to none':>17} {'busy µs/req':>11} "
            f"{'ratio to none':>17} {'server busy':>11} {'blocked µs/req':>14} {'py-spy CPU':>10} {'load CPU':>8}")
    lines = [f"paired windows: echo on {p['loop']}, server alone on one core, {load}; {p['triplets']} triplets of "
             f"{p['window_s']:g} s windows in random order", head, "-" * len(head)]
    names = {"none": "nothing", "target": "the target", "decoy": "a decoy (idle process)"}
    for condition in CONDITIONS:
        r = p["conditions"][condition]

        def ratio(key: str) -> str:
            return f"{r[key]['ratio']:.4f} ± {r[key]['se']:.4f}" if key in r else ""
        blocked = f"{r['blocked_us_per_request']:.2f}" if p["blocked_counted"] else "n/a"
        lines.append(f"{names[condition]:<24} {r['rps']:>8,.0f} {ratio('rps_ratio'):>17} {r['busy_us_per_request']:>11.2f} "
                     f"{ratio('busy_ratio'):>17} {r['server_busy']:>11.1%} {blocked:>14} {r['profiler_cpu']:>10.1%} {r['load_cpu']:>8.1%}")
    lines.append("-" * len(head))
    lines.append("busy: the server's CPU + its time blocked in the kernel (state D, eBPF), per request: "
                 "the inverse of its capacity. Ratios: totals against the windows with none sampling ± 1 standard "
                 "error (bootstrap over triplets).")
    if not p["load_held"]:
        lines.append(f"the load was not held (offered {p['offered_rps']:,.0f} req/s): the load's core had no room "
                     f"left, or the capacity measured first was high; try a lower --load")
    what = "req/s" if p["share"] is None else "busy time per request"
    lines.append(f"target py-spy 100 Hz: cost in {what} {p['cost']:+.2%} ± {p['cost_se']:.2%}; "
                 f"< 1% with 2 s.e. to spare: {p['verdict']}")
    return "\n".join(lines)


def _median_of(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def run(quick: bool = False, loop: str = "asyncio", cpu_bound: bool = True) -> dict:
    """Rounds of, per setup: baseline, every profiled variant, baseline again. A variant's
    cost in a round is measured against the mean of the two baselines around it; the median
    over rounds is reported."""
    warmup, seconds, rounds = (0.3, 1.0, 1) if quick else (0.3, 2.0, 6)
    setups = [s for s in SETUPS if not s.pinned or two_cores() is not None]
    runs: dict[tuple[str, str], list[dict]] = {}
    # (setup, variant) -> per round: req/s and server CPU per request, each as a ratio to
    # the mean of the baselines around it
    ratios: dict[tuple[str, str], dict[str, list[float]]] = {}
    blocked = BlockedTime.open()
    try:
        with tempfile.TemporaryDirectory(prefix="coroscope-flame-bench-") as tmp:
            for _ in range(rounds):
                for setup in setups:
                    before = measure(BASELINE, setup, loop, warmup, seconds, tmp, blocked)
                    mid = [measure(v, setup, loop, warmup, seconds, tmp, blocked) for v in setup.variants]
                    after = measure(BASELINE, setup, loop, warmup, seconds, tmp, blocked)
                    runs.setdefault((setup.name, BASELINE.name), []).extend([before, after])
                    for r in mid:
                        runs.setdefault((setup.name, r["variant"]), []).append(r)
                        into = ratios.setdefault((setup.name, r["variant"]), {"rps": [], "cpu": []})
                        for key in into:
                            field_ = "rps" if key == "rps" else "cpu_us_per_request"
                            into[key].append(r[field_] / ((before[field_] + after[field_]) / 2))
    finally:
        if blocked is not None:
            blocked.close()
    rows = []
    for (setup, variant), rs in runs.items():
        paired = (setup, variant) in ratios
        rows.append({
            "setup": setup, "variant": variant,
            "rps": statistics.median(r["rps"] for r in rs), "rps_all": [round(r["rps"]) for r in rs],
            "throughput_cost": 1 - statistics.median(ratios[setup, variant]["rps"]) if paired else 0.0,
            "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in rs),
            "cpu_cost": statistics.median(ratios[setup, variant]["cpu"]) - 1 if paired else 0.0,
            **{k: _median_of(rs, k) for k in ("server_util", "client_util", "sleeps_per_1k",
                                              "blocked_us_per_request", "profiler_cpu", "gil_held",
                                              "sample_us")},
            # the load must not be the limit: its busiest run, not its median
            "client_util_max": max(r["client_util"] for r in rs)})
    by = {(r["setup"], r["variant"]): r for r in rows}
    targets = {f"{SAMPLER_CPU.name}: GIL held < 3%": by["shared", SAMPLER_CPU.name]["gil_held"] < 0.03}
    if two_cores() is not None:
        targets[f"{SAMPLER_CPU.name}: req/s cost < 3% (pinned)"] = \
            by["pinned", SAMPLER_CPU.name]["throughput_cost"] < 0.03
    return {"loop": loop, "connections": CONNS, "seconds_per_run": seconds, "rounds": rounds,
            "pyspy_command": " ".join(os.path.basename(a) if i == 0 else a
                                      for i, a in enumerate(record_command(0, "OUT", RATE))),
            "results": rows, "targets": targets,
            "cpu_bound": run_cpu_bound(quick) if cpu_bound else None}


# A fixed amount of asyncio work (no I/O): 20 tasks doing arithmetic and yielding to the loop.
# It prints the CPU its main thread used and, when the sampler runs, the sampler thread's CPU.
_CPU_WORKER = r"""
import asyncio, sys, time
sys.stdin.readline()                              # "go": py-spy is attached by now
async def worker(n):
    x = 0
    for i in range(n):
        for j in range(300):
            x = (x * 31 + j) % 1000003
        await asyncio.sleep(0)
async def main():
    await asyncio.gather(*(worker(ROUNDS) for _ in range(20)))
from diag.flame import sampler
def own():
    return sampler._installed.own_cpu_s if sampler._installed is not None else 0.0
s0, t0 = own(), time.thread_time()
asyncio.run(main())
main_cpu, own_cpu = time.thread_time() - t0, own() - s0
print(main_cpu, own_cpu, flush=True)
"""
CPU_BOUND_VARIANTS = [SAMPLER_CPU, PYSPY, PYSPY_BLOCKING]


def measure_cpu_bound(variant: Variant, rounds: int, tmp: str) -> dict:
    """CPU seconds the fixed work cost the target: main thread + the sampler thread; pinned like
    the echo (the worker on one core, py-spy on the other) when there are two cores."""
    work_cpu, spy_cpu = two_cores() or (None, None)
    worker = subprocess.Popen([sys.executable, "-c", _CPU_WORKER.replace("ROUNDS", str(rounds))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=_server_env(variant, tmp), cwd=ROOT, preexec_fn=pinned_to(work_cpu))
    spy = None
    try:
        if variant.pyspy:
            time.sleep(0.3)
            spy = _start_pyspy(worker.pid, tmp, variant, spy_cpu)
            time.sleep(0.5)
        out, _ = worker.communicate("go\n", timeout=300)
        main_cpu, sampler_cpu = map(float, out.split())
    finally:
        kill_if_running(worker)
        _stop_pyspy(spy)
    return {"variant": variant.name, "cpu": main_cpu + sampler_cpu, "sampler_cpu": sampler_cpu}


def run_cpu_bound(quick: bool = False) -> dict:
    """The same rounds-with-two-baselines scheme as the echo, on CPU seconds for fixed work."""
    work, rounds = (300, 1) if quick else (1000, 3)
    ratios: dict[str, list[float]] = {v.name: [] for v in CPU_BOUND_VARIANTS}
    base_cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="coroscope-flame-bench-") as tmp:
        for _ in range(rounds):
            before = measure_cpu_bound(BASELINE, work, tmp)
            mid = [measure_cpu_bound(v, work, tmp) for v in CPU_BOUND_VARIANTS]
            after = measure_cpu_bound(BASELINE, work, tmp)
            base = (before["cpu"] + after["cpu"]) / 2
            base_cpu += [before["cpu"], after["cpu"]]
            for r in mid:
                ratios[r["variant"]].append(r["cpu"] / base)
    return {"work_cpu_s": statistics.median(base_cpu), "rounds": rounds,
            "cost": {v: statistics.median(r) - 1 for v, r in ratios.items()},
            "cost_all": {v: [round(x - 1, 4) for x in r] for v, r in ratios.items()}}


def _pct(value, digits=1) -> str:
    return "" if value is None else f"{100 * value:.{digits}f}%"


def _client(row: dict) -> str:
    return _pct(row["client_util"], 0) + ("*" if row["client_util_max"] > CLIENT_BUSY else "")


def render(report: dict) -> str:
    head = (f"{'setup':<11} {'variant':<24} {'req/s':>7} {'cost':>6} {'µs CPU/req':>10} {'CPU cost':>8} "
            f"{'blocked µs/req':>14} {'server':>6} {'client':>6} {'sleeps/1k':>9} "
            f"{'profiler CPU':>12} {'GIL held':>8}  runs (req/s)")
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        blocked = "" if r["blocked_us_per_request"] is None else f"{r['blocked_us_per_request']:.2f}"
        lines.append(
            f"{r['setup']:<11} {r['variant']:<24} {r['rps']:>7.0f} {_pct(r['throughput_cost']):>6} "
            f"{r['cpu_us_per_request']:>10.1f} {_pct(r['cpu_cost']):>8} {blocked:>14} "
            f"{_pct(r['server_util'], 0):>6} {_client(r):>6} "
            f"{r['sleeps_per_1k']:>9.1f} {_pct(r['profiler_cpu'], 2):>12} {_pct(r['gil_held'], 2):>8}  "
            f"{r['rps_all']}")
    lines.append("-" * len(head))
    lines.append(f"echo on {report['loop']}, {report['connections']} connections, {report['rounds']} rounds of "
                 f"{report['seconds_per_run']} s per variant; cost = median over rounds of "
                 f"1 - req/s / mean(baseline before, after)")
    lines.append("pinned: server alone on one core, client and profiler on the other (the verdict); "
                 "shared: no affinity (a machine with no spare core); pinned+heap: pinned, the server's "
                 "recv buffers kept on the heap (no mmap per read)")
    lines.append("blocked: time the server's threads spent blocked in the kernel (state D, counted with eBPF)")
    if any(r["client_util_max"] > CLIENT_BUSY for r in report["results"]):
        lines.append(f"*: the load client used over {CLIENT_BUSY:.0%} of its core in some run: "
                     f"that row's req/s may measure the client, not the server")
    lines.append(f"py-spy runs as coroscope runs it: {report['pyspy_command']}")
    lines.append("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in report["targets"].items()))
    lines.append(f"{PYSPY.name}: req/s cost < 1% is judged with --paired (rounds resolve nothing under ~5% here)")
    cpu = report.get("cpu_bound")
    if cpu:
        lines.append("")
        lines.append(f"CPU-bound asyncio work ({cpu['work_cpu_s']:.2f} s of CPU, {cpu['rounds']} rounds, pinned): "
                     f"extra CPU of the target's threads (+ the sampler thread) per unit of work, median")
        for v, c in cpu["cost"].items():
            lines.append(f"  {v:<24} {100 * c:+6.2f}%   rounds: {[f'{100 * x:+.1f}%' for x in cpu['cost_all'][v]]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "runtime", "uvloop"))
    parser.add_argument("--no-cpu-bound", action="store_true", help="only the echo part")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--paired", type=int, default=0, metavar="TRIPLETS",
                        help="only py-spy's paired-window measurement, with this many triplets of windows "
                             "(600: about 10 minutes)")
    parser.add_argument("--load", default=str(PACED_SHARE), metavar="SHARE|saturated",
                        help="--paired: the load offered, as a share of the server's capacity "
                             f"(default {PACED_SHARE}), or 'saturated'")
    parser.add_argument("--window", type=float, default=0.25, metavar="S", help="--paired: seconds per window")
    args = parser.parse_args(argv)
    if args.paired:
        share = None if args.load == "saturated" else float(args.load)
        with tempfile.TemporaryDirectory() as tmp:
            report = {"paired": measure_paired(args.loop, args.paired, args.window, tmp, share)}
        print(render_paired(report["paired"]))
    else:
        report = run(quick=args.quick, loop=args.loop, cpu_bound=not args.no_cpu_bound)
        print(render(report))
    if args.json:
        from diag.model.base import write_json_atomic
        write_json_atomic(Path(args.json), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
