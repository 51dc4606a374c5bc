"""Does watching cost the target? Throughput of a traced service with and without `coroscope top`.

    python -m benchmarks.dashboard_overhead [--quick]

The target (this module with ``--workload``) runs on the runtime with tracing on: pairs of tasks
ping-pong 64 bytes over socketpairs, each round trip one marked request that spawns a child
task, so the ring gets task, step, request and io records at full speed. It counts round trips
for a fixed time. Three ways, interleaved round by round so drift hits all alike:

    alone      nothing attached
    reader     the dashboard's data layer (LiveSource.poll) at 10 Hz, ten times the default
    dashboard  the real app, headless, at its default 1 s refresh (ring pumped every 50 ms)

The dashboard reads shared memory and /proc only, so the expected ratio is 1.0 within noise; on
this 2-core machine the dashboard's own CPU competes with the target, which is the cost a user
would see. Reported: requests/s per way and its ratio to alone; requests per CPU second of the
target (the work each request costs the target, which machine contention does not change) and
its ratio; records read and lost by the reader; the observer's CPU as a share of one core.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAIRS = 8


# ------------------------------------------------------------------------------ the target
async def _pair(stop: asyncio.Event, counter: list[int]) -> None:
    import socket

    from runtime import request

    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def handler():
        data = await loop.sock_recv(b, 64)
        await loop.sock_sendall(b, data)

    payload = b"x" * 64
    while not stop.is_set():
        with request("ping"):
            child = asyncio.create_task(handler())
            await loop.sock_sendall(a, payload)
            await loop.sock_recv(a, 64)
            await child
        counter[0] += 1
    a.close()
    b.close()


async def _workload(seconds: float) -> None:
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)      # "go"
    stop = asyncio.Event()
    counter = [0]
    tasks = [asyncio.create_task(_pair(stop, counter)) for _ in range(PAIRS)]
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    print(json.dumps({"requests": counter[0], "seconds": time.perf_counter() - t0,
                      "cpu": time.process_time() - c0}), flush=True)


# ------------------------------------------------------------------------------ the runs
def _start_target(seconds: float) -> subprocess.Popen:
    env = dict(os.environ, COROSCOPE_TRACE="1", COROSCOPE_LOOP="runtime",
               PYTHONPATH=os.pathsep.join([str(ROOT / "diag" / "bootstrap"), str(ROOT)]))
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.dashboard_overhead", "--workload",
                             str(seconds)], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _finish(proc: subprocess.Popen) -> tuple[float, float]:
    """(requests per second, requests per CPU second of the target)."""
    result = json.loads(proc.stdout.readline())
    proc.wait(30)
    return result["requests"] / result["seconds"], result["requests"] / max(result["cpu"], 1e-9)


def _go(proc: subprocess.Popen) -> None:
    proc.stdin.write("go\n")
    proc.stdin.flush()


def run_alone(seconds: float) -> dict:
    proc = _start_target(seconds)
    _go(proc)
    rps, per_cpu = _finish(proc)
    return {"rps": rps, "per_cpu": per_cpu}


def run_reader(seconds: float, hz: float = 10.0) -> dict:
    from diag.live.source import attach

    proc = _start_target(seconds)
    source = attach(proc.pid)
    done = threading.Event()
    polls = [0]

    cpu = [0.0]

    def observe():
        while not done.is_set():
            t0 = time.thread_time()
            source.poll()
            cpu[0] += time.thread_time() - t0
            polls[0] += 1
            done.wait(1 / hz)

    thread = threading.Thread(target=observe)
    thread.start()
    _go(proc)
    rps, per_cpu = _finish(proc)
    done.set()
    thread.join()
    snap = source.poll()
    source.close()
    return {"rps": rps, "per_cpu": per_cpu, "records": snap.records, "lost": snap.lost_records,
            "polls": polls[0], "cpu_s": cpu[0]}


def run_dashboard(seconds: float) -> dict:
    from dashboards.app import DashboardApp
    from diag.live.source import attach

    proc = _start_target(seconds)
    app = DashboardApp(attach(proc.pid), refresh_s=1.0)
    result: dict = {}

    async def main():
        t0 = time.process_time()
        async with app.run_test(size=(140, 45)):
            _go(proc)
            result["rps"], result["per_cpu"] = await asyncio.get_running_loop().run_in_executor(
                None, _finish, proc)
            result["records"] = app.snapshot.records
            result["lost"] = app.snapshot.lost_records
            result["refreshes"] = app.refreshes
            result["cpu_s"] = time.process_time() - t0

    asyncio.run(main())
    return result


WAYS = {"alone": run_alone, "reader": run_reader, "dashboard": run_dashboard}


def run(quick: bool = False) -> dict:
    seconds = 2.0 if quick else 5.0
    rounds = 2 if quick else 3
    runs: dict[str, list[dict]] = {way: [] for way in WAYS}
    for _ in range(rounds):
        for way, fn in WAYS.items():
            runs[way].append(fn(seconds))
    alone = statistics.median(r["rps"] for r in runs["alone"])
    alone_cpu = statistics.median(r["per_cpu"] for r in runs["alone"])
    out = {"seconds": seconds, "rounds": rounds, "pairs": PAIRS, "ways": {}}
    for way, results in runs.items():
        rps = statistics.median(r["rps"] for r in results)
        out["ways"][way] = {
            "rps_median": round(rps, 1),
            "rps_runs": [round(r["rps"], 1) for r in results],
            "ratio_to_alone": round(rps / alone, 3),
            "per_cpu_s_median": round(statistics.median(r["per_cpu"] for r in results), 1),
            "per_cpu_ratio_to_alone": round(statistics.median(r["per_cpu"] for r in results) / alone_cpu, 3),
            "records_read": [r.get("records") for r in results],
            "records_lost": [r.get("lost") for r in results],
            "observer_cpu_share": (round(statistics.median(r["cpu_s"] for r in results) / seconds, 3)
                                   if "cpu_s" in results[0] else None),
        }
    return out


def render(report: dict) -> str:
    lines = [f"dashboard overhead: {report['pairs']} ping-pong pairs, traced runtime, "
             f"{report['seconds']} s x {report['rounds']} rounds (medians)",
             f"{'way':<10} {'req/s':>10} {'ratio':>7} {'req/cpu-s':>10} {'ratio':>7}  "
             f"{'records read':>24}  {'lost':>12}  {'obs cpu':>7}  req/s runs"]
    for way, r in report["ways"].items():
        read = ",".join(str(x) for x in r["records_read"]) if r["records_read"][0] is not None else "-"
        lost = ",".join(str(x) for x in r["records_lost"]) if r["records_lost"][0] is not None else "-"
        share = "-" if r["observer_cpu_share"] is None else f"{100 * r['observer_cpu_share']:.0f}%"
        lines.append(f"{way:<10} {r['rps_median']:>10.0f} {r['ratio_to_alone']:>7.3f} "
                     f"{r['per_cpu_s_median']:>10.0f} {r['per_cpu_ratio_to_alone']:>7.3f}  {read:>24}  "
                     f"{lost:>12}  {share:>7}  {r['rps_runs']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--workload", type=float, metavar="S", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workload:
        asyncio.run(_workload(args.workload))
        return 0
    report = run(quick=args.quick)
    print(render(report))
    if args.json:
        from diag.model.base import write_json_atomic
        write_json_atomic(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
