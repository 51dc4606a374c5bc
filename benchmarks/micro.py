"""Loop micro-benchmarks on runtime, asyncio and uvloop, each in a fresh process, with peak memory.

    python -m benchmarks.micro [--quick]

    spawn_await   create N tasks of a coroutine that returns at once, then await each: tasks/s
    call_soon     N callbacks through call_soon, in batches of 1,000: events/s
    start_stop    new loop, run one trivial coroutine, close the loop: loops/s
    timers        100,000 call_later timers scheduled, then all cancelled, then one loop pass
                  that drops them: timers/s (schedule + cancel)

Every (benchmark, loop) pair runs in its own interpreter so one loop's heap and caches never
colour another's numbers, and peak memory is that process's own: the growth of its peak RSS
(VmHWM) over what it had before the benchmark began. Rounds interleave the loops (every loop
once per round) and each ratio comes with its spread over the rounds (``benchmarks.spread``).

Instructions per operation: each (benchmark, loop) also runs under callgrind
(``valgrind --tool=callgrind``) twice, at N and 2N operations, in a fresh interpreter with
PYTHONHASHSEED pinned; (instructions at 2N - instructions at N) / N is what one operation costs,
start-up, imports and the loop's creation cancelling out. The count does not depend on what
else the machine runs, so it is the same on every run: the figure to gate on when wall-clock
rounds disagree. Where the runtime's C accelerator (``runtime.accel``) is built, the runtime is
also counted with it turned off (``runtime-pure``, COROSCOPE_PURE_PYTHON=1): what it buys.
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

from benchmarks import procs

ROOT = Path(__file__).resolve().parent.parent
LOOPS = ("runtime", "asyncio", "uvloop")
BENCHMARKS = ("spawn_await", "call_soon", "start_stop", "timers")
UNITS = {"spawn_await": "tasks/s", "call_soon": "events/s", "start_stop": "loops/s",
         "timers": "timers/s"}


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name in ("runtime", "runtime-pure"):  # runtime-pure: the environment turned accel off
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


def callgrind_sizes() -> dict[str, int]:
    """N of the callgrind runs (2N is the other): enough operations that N of them dwarf any
    one-off cost that does not cancel, few enough that callgrind (~50x slower) takes seconds."""
    return {"spawn_await": 5_000, "call_soon": 20_000, "start_stop": 50, "timers": 10_000}


def run_one(bench: str, loop: str, n: int, repeat: int) -> dict:
    """One benchmark on one loop, here (called in the child process). Best of ``repeat``;
    the parent runs this in several rounds, interleaving the loops, and keeps the median."""
    warm = new_loop(loop)  # imports and first-use costs (of a loop, and of a task) out of the measurement
    warm.run_until_complete(_noop())
    warm.close()
    before = peak_rss_kib()
    best = None
    for _ in range(repeat):
        ops, seconds = _FUNCS[bench](loop, n)
        best = seconds if best is None else min(best, seconds)
    # peak_kib: the process's peak RSS, as the servers' rows give theirs (a growth of a few KiB
    # during the run is allocator noise, tens of KiB up or down from run to run; it is kept too)
    after = peak_rss_kib()
    return {"bench": bench, "loop": loop, "n": n, "seconds": best, "per_s": n / best,
            "peak_kib": after, "growth_kib": max(0, after - before)}


def _child_env(loop: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), PYTHONHASHSEED="0")
    env.pop("COROSCOPE_TRACE", None)
    if loop == "runtime-pure":
        env["COROSCOPE_PURE_PYTHON"] = "1"
    return env


def callgrind_instructions(bench: str, loop: str, n: int) -> int | None:
    """Instructions callgrind counts for a fresh interpreter running ``bench`` once at ``n``."""
    try:
        return procs.callgrind_instructions(
            [sys.executable, "-m", "benchmarks.micro", "--one", bench, loop, str(n), "1"],
            env=_child_env(loop), cwd=ROOT)
    except RuntimeError:
        return None


def instructions_per_op(ir_n: int, ir_2n: int, n: int) -> float:
    """One operation's instructions from runs at N and 2N: what is paid once cancels out."""
    if ir_2n < ir_n:
        raise ValueError(f"the run at 2N counted fewer instructions ({ir_2n}) than at N ({ir_n})")
    return (ir_2n - ir_n) / n


def callgrind_loops() -> tuple[str, ...]:
    """The loops counted under callgrind: runtime-pure too when the accelerator is built."""
    proc = subprocess.run([sys.executable, "-c", "import runtime.accel as a; print(a.COMPILED)"],
                          capture_output=True, text=True, env=_child_env("runtime"), cwd=ROOT)
    return (*LOOPS, "runtime-pure") if proc.stdout.strip() == "True" else LOOPS


def run_callgrind() -> dict:
    """Instructions per operation of every (benchmark, loop); two at a time (one per core: the
    count does not depend on how busy the machine is, only the wall time does)."""
    import shutil
    from concurrent.futures import ThreadPoolExecutor
    if not shutil.which("valgrind"):
        return {"skipped": "valgrind is not installed"}
    sizes_ = callgrind_sizes()
    loops = callgrind_loops()
    jobs = [(bench, loop, k * sizes_[bench]) for bench in BENCHMARKS for loop in loops for k in (1, 2)]
    with ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(lambda job: callgrind_instructions(*job), jobs))
    by_job = dict(zip(jobs, counts))
    rows = []
    for bench in BENCHMARKS:
        for loop in loops:
            n = sizes_[bench]
            ir_n, ir_2n = by_job[(bench, loop, n)], by_job[(bench, loop, 2 * n)]
            row = {"bench": bench, "loop": loop, "n": n}
            if ir_n is None or ir_2n is None:
                row["error"] = "callgrind run failed"
            else:
                row.update(ir_n=ir_n, ir_2n=ir_2n, ir_per_op=instructions_per_op(ir_n, ir_2n, n))
            rows.append(row)
    return {"results": rows, "loops": loops}


def render_callgrind(report: dict) -> str:
    """Instructions per operation: asyncio's absolute, and how many times fewer each loop runs
    (asyncio / loop: higher is better), the runtime against uvloop (runtime / uvloop: lower is
    better, 1.00x is uvloop's count) and, when built, what the accelerator buys."""
    if report.get("skipped"):
        return f"instructions per operation (callgrind): skipped: {report['skipped']}"
    by: dict[str, dict[str, dict]] = {}
    for r in report["results"]:
        by.setdefault(r["bench"], {})[r["loop"]] = r
    pure = "runtime-pure" in report["loops"]
    head = (f"{'instructions/op (callgrind)':<28} {'asyncio':>9} {'runtime':>9} {'uvloop':>9} "
            f"{'aio/rt':>7} {'aio/uv':>7} {'rt/uv':>7}"
            + (f" {'pure Python':>11} {'accel buys':>10}" if pure else ""))
    lines = [head, "-" * len(head)]
    for bench, loops in by.items():
        ir = {loop: row.get("ir_per_op") for loop, row in loops.items()}
        def cell(v):
            return f"{v:,.0f}" if v else "n/a"
        def ratio(a, b):
            return f"{ir[a] / ir[b]:.2f}x" if ir.get(a) and ir.get(b) else "n/a"
        line = (f"{bench:<28} {cell(ir.get('asyncio')):>9} {cell(ir.get('runtime')):>9} "
                f"{cell(ir.get('uvloop')):>9} {ratio('asyncio', 'runtime'):>7} "
                f"{ratio('asyncio', 'uvloop'):>7} {ratio('runtime', 'uvloop'):>7}")
        if pure:
            line += f" {cell(ir.get('runtime-pure')):>11} {ratio('runtime-pure', 'runtime'):>10}"
        lines.append(line)
    return "\n".join(lines)


def measure(bench: str, loop: str, n: int, repeat: int = 3) -> dict:
    """Run one benchmark in a fresh interpreter and return its result."""
    env = _child_env(loop)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.micro", "--one", bench, loop, str(n),
                           str(repeat)], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"bench": bench, "loop": loop, "n": n, "error": last}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rounds(quick: bool) -> int:
    return 2 if quick else 5


def estimated_seconds(quick: bool) -> float:
    """The plan's length on the 2-core machine: the timed rounds (a fresh interpreter per row,
    ~0.5 s of start-up, and the repeats) and the callgrind runs (two at a time)."""
    per_round = 3 * (2.5 if quick else 8.0)  # three loops, all four benchmarks
    callgrind = 0 if quick else 4 * (len(LOOPS) + 1) * 2 * 15.0 / 2  # 15 s a run, when busy
    return _rounds(quick) * per_round + callgrind


def run(quick: bool = False) -> dict:
    from benchmarks.suite import median_of_rounds, spreads
    n = sizes(quick)
    rounds = _rounds(quick)
    results = [dict(measure(bench, loop, n[bench], 1 if quick else 2), round=r)
               for r in range(rounds) for bench in BENCHMARKS for loop in LOOPS]
    report = {"results": median_of_rounds(results, "bench", fields=("per_s",)), "raw": results,
              "ratios": spreads(results, "bench"), "units": UNITS, "rounds": rounds}
    if not quick:  # a smoke test does not need the minutes callgrind takes
        report["callgrind"] = run_callgrind()
    return report


def render(report: dict) -> str:
    from benchmarks.suite import ratio_table
    parts = [ratio_table("loop micro-benchmarks", report.get("raw", report["results"]), "bench",
                         report["units"])]
    if "callgrind" in report:
        parts += ["", render_callgrind(report["callgrind"])]
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--callgrind", action="store_true",
                        help="only the instructions per operation under callgrind")
    parser.add_argument("--one", nargs=4, metavar=("BENCH", "LOOP", "N", "REPEAT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        bench, loop, n, repeat = args.one
        print(json.dumps(run_one(bench, loop, int(n), int(repeat))))
        return 0
    if args.callgrind:
        print(render_callgrind(run_callgrind()))
        return 0
    print(render(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
