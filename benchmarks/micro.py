"""Loop micro-benchmarks on runtime, asyncio and uvloop, each in a fresh process, with peak memory.

    python -m benchmarks.micro [--quick]

    spawn_await   create N tasks of a coroutine that returns at once, then await each: tasks/s
    call_soon     N callbacks through call_soon, in batches of 1,000: events/s
    start_stop    new loop, run one trivial coroutine, close the loop: loops/s
    timers        100,000 call_later timers scheduled, then all cancelled, then one loop pass
                  that drops them: timers/s (schedule + cancel)

Every (benchmark, loop) pair runs in its own interpreter so one loop's heap and caches never
colour another's numbers, and peak memory is that process's own: the growth of its peak RSS
(VmHWM) over what it had before the benchmark began.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPS = ("runtime", "asyncio", "uvloop")
BENCHMARKS = ("spawn_await", "call_soon", "start_stop", "timers")
UNITS = {"spawn_await": "tasks/s", "call_soon": "events/s", "start_stop": "loops/s",
         "timers": "timers/s"}


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "runtime":
        import runtime
        return runtime.new_event_loop()
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.SelectorEventLoop()


def peak_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def _noop():
    return None


def _timed_run(loop, coro, n: int) -> tuple[int, float]:
    """Run ``coro`` to completion on ``loop`` (closed afterwards): (n, seconds it took)."""
    try:
        start = time.perf_counter()
        loop.run_until_complete(coro)
        return n, time.perf_counter() - start
    finally:
        loop.close()


def bench_spawn_await(loop_name: str, n: int) -> tuple[int, float]:
    loop = new_loop(loop_name)

    async def main():
        tasks = [asyncio.create_task(_noop()) for _ in range(n)]
        for task in tasks:
            await task

    return _timed_run(loop, main(), n)


def bench_call_soon(loop_name: str, n: int) -> tuple[int, float]:
    loop = new_loop(loop_name)
    batch = 1000

    async def main():
        this = asyncio.get_running_loop()
        remaining = n
        while remaining > 0:
            k = min(batch, remaining)
            done = this.create_future()
            counter = [k]

            def callback():
                counter[0] -= 1
                if counter[0] == 0:
                    done.set_result(None)

            for _ in range(k):
                this.call_soon(callback)
            await done
            remaining -= k

    return _timed_run(loop, main(), n)


def bench_start_stop(loop_name: str, n: int) -> tuple[int, float]:
    start = time.perf_counter()
    for _ in range(n):
        loop = new_loop(loop_name)
        loop.run_until_complete(_noop())
        loop.close()
    return n, time.perf_counter() - start


def bench_timers(loop_name: str, n: int) -> tuple[int, float]:
    loop = new_loop(loop_name)

    async def main():
        this = asyncio.get_running_loop()
        handles = [this.call_later(1000.0 + (i % 997), _noop) for i in range(n)]
        for handle in handles:
            handle.cancel()
        await asyncio.sleep(0)  # one pass, in which the loop drops the cancelled timers

    return _timed_run(loop, main(), n)


_FUNCS = {"spawn_await": bench_spawn_await, "call_soon": bench_call_soon,
          "start_stop": bench_start_stop, "timers": bench_timers}


def sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"spawn_await": 20_000, "call_soon": 100_000, "start_stop": 300, "timers": 100_000}
    return {"spawn_await": 200_000, "call_soon": 1_000_000, "start_stop": 2_000, "timers": 100_000}


def run_one(bench: str, loop: str, n: int, repeat: int) -> dict:
    """One benchmark on one loop, here (called in the child process). Best of ``repeat``;
    the parent runs this in several rounds, interleaving the loops, and keeps the median."""
    new_loop(loop).close()  # imports and first-use costs out of the measurement
    before = peak_rss_kib()
    best = None
    for _ in range(repeat):
        ops, seconds = _FUNCS[bench](loop, n)
        best = seconds if best is None else min(best, seconds)
    return {"bench": bench, "loop": loop, "n": n, "seconds": best, "per_s": n / best,
            "peak_kib": max(0, peak_rss_kib() - before)}


def measure(bench: str, loop: str, n: int, repeat: int = 3) -> dict:
    """Run one benchmark in a fresh interpreter and return its result."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.micro", "--one", bench, loop, str(n),
                           str(repeat)], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"bench": bench, "loop": loop, "n": n, "error": last}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    from benchmarks.suite import median_of_rounds
    n = sizes(quick)
    rounds = 1 if quick else 3
    results = [measure(bench, loop, n[bench], 1 if quick else 2)
               for _ in range(rounds) for bench in BENCHMARKS for loop in LOOPS]
    return {"results": median_of_rounds(results, "bench", fields=("per_s",)), "units": UNITS,
            "rounds": rounds}


def render(report: dict) -> str:
    from benchmarks.suite import ratio_table
    return ratio_table("loop micro-benchmarks", report["results"], "bench", report["units"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", nargs=4, metavar=("BENCH", "LOOP", "N", "REPEAT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        bench, loop, n, repeat = args.one
        print(json.dumps(run_one(bench, loop, int(n), int(repeat))))
        return 0
    print(render(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
