"""What profiling costs the profiled: echo throughput with and without a flame-graph sampler.

    python -m benchmarks.flame_overhead [--quick] [--json FILE]

The echo server and client are the echo benchmark's own (``benchmarks.echo_server``,
``benchmarks.echo_client``: 50 keep-alive connections, 64-byte messages). Each variant runs a fresh
server. Server CPU per request is reported too (less sensitive to a busy machine).

Each round runs the baseline, every variant, and the baseline again; a variant's cost is its
ratio to the two baselines around it, and the median over rounds is reported.

Variants: the in-process sampler at 100 Hz in cpu mode (injected through sitecustomize, as
``coroscope flame -- CMD`` does) and in await mode; py-spy attached to the pid at 100 Hz,
non-blocking (coroscope's default) and blocking (``--blocking``, pauses the target per sample).

"profiler CPU" is the profiler's own CPU per second of wall time, measured exactly (the sampler
thread's CPU clock, py-spy's /proc stat), the part of the cost that no neighbour's load blurs.

Targets (issue 7): in-process sampler at 100 Hz under 3% of throughput; py-spy mode under 1%.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = ROOT / "diag" / "bootstrap"
CONNS = 50

VARIANTS = {
    # name -> (environment for the server, py-spy arguments or None)
    "baseline": ({}, None),
    "sampler cpu 100 Hz": ({"COROSCOPE_SAMPLER": "{tmp}/s-{pid}.txt", "COROSCOPE_SAMPLER_RATE": "100"}, None),
    "sampler await 100 Hz": ({"COROSCOPE_SAMPLER": "{tmp}/s-{pid}.txt", "COROSCOPE_SAMPLER_RATE": "100",
                              "COROSCOPE_SAMPLER_MODE": "await"}, None),
    "py-spy 100 Hz": ({}, ["--nonblocking"]),
    "py-spy 100 Hz blocking": ({}, []),
}


def _cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads, in ns resolution (schedstat), not 10 ms ticks."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        pass
    return total / 1e9


def _pin(pid: int, cpu: int) -> None:
    """Server on CPU 0; client and py-spy on CPU 1: py-spy's own CPU then competes with the
    client, which has room to spare (uvloop), not with the server whose cost we measure."""
    if len(os.sched_getaffinity(0)) >= 2:
        try:
            os.sched_setaffinity(pid, {sorted(os.sched_getaffinity(0))[cpu]})
        except OSError:
            pass


def measure(variant: str, loop: str, warmup: float, seconds: float, tmp: str) -> dict:
    extra_env, pyspy_args = VARIANTS[variant]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BOOTSTRAP), str(ROOT), env.get("PYTHONPATH")]))
    env.update({k: v.replace("{tmp}", tmp) for k, v in extra_env.items()})
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.echo_server", "--loop", loop],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    spy = None
    _pin(server.pid, 0)
    try:
        port = int(server.stdout.readline())
        client_env = {k: v for k, v in env.items() if not k.startswith("COROSCOPE_")}
        client = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.echo_client", str(port), str(CONNS), str(warmup), str(seconds),
             "sync"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=client_env, cwd=ROOT)
        _pin(client.pid, 1)
        try:
            if client.stdout.readline().split() != ["ready"]:
                raise RuntimeError("echo client did not start")
            if pyspy_args is not None:
                spy = subprocess.Popen(
                    [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid",
                     str(server.pid), "--rate", "100", "--format", "raw", "-o",
                     os.path.join(tmp, f"spy-{server.pid}.txt"), *pyspy_args],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                _pin(spy.pid, 1)
                time.sleep(0.3)                # attached before the window opens
            cpu0 = _cpu_seconds(server.pid)
            spy0 = _cpu_seconds(spy.pid) if spy is not None else 0.0
            client.stdin.write("go\n")
            client.stdin.flush()
            line = client.stdout.readline().split()
            server_cpu = _cpu_seconds(server.pid) - cpu0
            spy_cpu = _cpu_seconds(spy.pid) - spy0 if spy is not None else 0.0
            client.stdin.write("bye\n")
            client.stdin.flush()
            if len(line) != 4 or line[0] != "end":
                raise RuntimeError(f"echo client failed: {line}")
            requests, elapsed = int(line[1]), float(line[3])
            client.wait(timeout=30)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    finally:
        if spy is not None:
            spy.send_signal(2)
            try:
                spy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    # the profiler's own CPU per second of wall time: the sampler thread's (it holds the GIL
    # while it samples, so the loop loses exactly that), or the py-spy process's (on this
    # 2-core box it competes with the server and the client for a core)
    profiler_cpu = spy_cpu / elapsed if spy is not None else None
    if "COROSCOPE_SAMPLER" in extra_env:
        from diag.flame.sampler import read_sampler_file, sampler_path

        data = read_sampler_file(sampler_path(env["COROSCOPE_SAMPLER"], server.pid))
        profiler_cpu = data.self_cpu / data.elapsed
    return {"variant": variant, "rps": requests / elapsed,
            "cpu_us_per_request": 1e6 * server_cpu / max(requests, 1),
            "profiler_cpu": profiler_cpu}


def run(quick: bool = False, loop: str = "asyncio") -> dict:
    """Rounds of: baseline, every profiled variant, baseline again. A variant's cost in a round is
    measured against the mean of the two baselines around it, and the median over rounds is
    reported: a neighbour's job that slows the machine for a while slows both sides of a ratio."""
    warmup, seconds, rounds = (0.3, 1.0, 2) if quick else (0.3, 2.0, 7)
    profiled = [v for v in VARIANTS if v != "baseline"]
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    ratios: dict[str, list[float]] = {v: [] for v in profiled}
    cpu_ratios: dict[str, list[float]] = {v: [] for v in profiled}
    with tempfile.TemporaryDirectory(prefix="coroscope-flame-bench-") as tmp:
        for _ in range(rounds):
            before = measure("baseline", loop, warmup, seconds, tmp)
            round_runs = {v: measure(v, loop, warmup, seconds, tmp) for v in profiled}
            after = measure("baseline", loop, warmup, seconds, tmp)
            runs["baseline"] += [before, after]
            base_rps = (before["rps"] + after["rps"]) / 2
            base_cpu = (before["cpu_us_per_request"] + after["cpu_us_per_request"]) / 2
            for v, r in round_runs.items():
                runs[v].append(r)
                ratios[v].append(r["rps"] / base_rps)
                cpu_ratios[v].append(r["cpu_us_per_request"] / base_cpu)
    rows = []
    for variant, rs in runs.items():
        own = [r["profiler_cpu"] for r in rs if r["profiler_cpu"] is not None]
        paired = variant != "baseline"
        rows.append({
            "variant": variant, "rps": statistics.median(r["rps"] for r in rs),
            "rps_all": [round(r["rps"]) for r in rs],
            "throughput_cost": 1 - statistics.median(ratios[variant]) if paired else 0.0,
            "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in rs),
            "cpu_cost": statistics.median(cpu_ratios[variant]) - 1 if paired else 0.0,
            "profiler_cpu": statistics.median(own) if own else None})
    by = {r["variant"]: r for r in rows}
    return {"loop": loop, "connections": CONNS, "seconds_per_run": seconds, "rounds": rounds,
            "results": rows,
            "targets": {"sampler cpu 100 Hz < 3%": by["sampler cpu 100 Hz"]["throughput_cost"] < 0.03,
                        "py-spy 100 Hz < 1%": by["py-spy 100 Hz"]["throughput_cost"] < 0.01}}


def render(report: dict) -> str:
    head = (f"{'variant':<24} {'req/s (median)':>14} {'cost':>7} {'µs CPU/req':>10} {'CPU cost':>8} "
            f"{'profiler CPU':>12}  runs (req/s)")
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        own = "" if r["profiler_cpu"] is None else f"{100 * r['profiler_cpu']:.2f}%"
        lines.append(f"{r['variant']:<24} {r['rps']:>14.0f} {100 * r['throughput_cost']:>6.1f}% "
                     f"{r['cpu_us_per_request']:>10.1f} {100 * r['cpu_cost']:>7.1f}% {own:>12}  "
                     f"{r['rps_all']}")
    lines.append("-" * len(head))
    lines.append(f"echo on {report['loop']}, {report['connections']} connections, "
                 f"{report['rounds']} rounds of {report['seconds_per_run']} s per variant; cost = median "
                 f"over rounds of 1 - req/s / mean(baseline before, after)")
    lines.append("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}"
                                        for k, v in report["targets"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "runtime", "uvloop"))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    report = run(quick=args.quick, loop=args.loop)
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
