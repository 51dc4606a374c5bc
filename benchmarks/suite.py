"""The whole benchmark suite in one run, and the table the README shows.

    python -m benchmarks [--quick] [--only micro,echo,http]

Sections: loop micro-benchmarks (``benchmarks.micro``), TCP echo (the echo server and client of
``benchmarks.echo_server`` / ``benchmarks.echo_client``, at 1, 50 and 1,000 connections with 64 B
and 16 KiB messages), HTTP through wrk (``benchmarks.http``). Every row is measured on runtime,
asyncio and uvloop in the same run, one after the other, and shown as the absolute asyncio value
with the other two as ratios to it: ratios from one run on one machine are what carries over to
another machine, absolute numbers are not.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.procs import kill_if_running, stop_server

ROOT = Path(__file__).resolve().parent.parent
LOOPS = ("runtime", "asyncio", "uvloop")
ECHO_CONNECTIONS = (1, 50, 1000)
ECHO_SIZES = (64, 16 * 1024)


def median_of_rounds(results: list[dict], key: str, fields=("per_s", "p50_ms", "p99_ms")) -> list[dict]:
    """Rows measured in several rounds -> one row per (key, loop): the median of each field.

    Rounds interleave the loops (round 1: runtime, asyncio, uvloop; round 2: the same...), so a
    change in the machine's load during the run lands on every loop alike, and the median
    drops a round that caught a burst. Peak memory is the largest seen.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((str(r[key]), r["loop"]), []).append(r)
    out = []
    for rows in groups.values():
        good = [r for r in rows if "error" not in r]
        if not good:
            out.append(rows[0])
            continue
        row = dict(good[0])
        row["rounds"] = len(good)
        for f in fields:
            values = sorted(r[f] for r in good if r.get(f) is not None)
            if values:
                row[f] = values[len(values) // 2]
        if any("peak_kib" in r for r in good):
            row["peak_kib"] = max(r.get("peak_kib", 0) for r in good)
        out.append(row)
    return out


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


# What a user would pick instead of the runtime for each kind of row: the drop-in loop that is
# faster than asyncio. Every table names it per row, with its ratio to asyncio beside the runtime's.
ALTERNATIVE = "uvloop"


def memory_ratio(by_loop: dict[str, dict]) -> str:
    """Runtime's peak memory over asyncio's (peaks are the largest over the rounds)."""
    mine = by_loop.get("runtime", {}).get("peak_kib")
    theirs = by_loop.get("asyncio", {}).get("peak_kib")
    if not mine or not theirs:
        return "n/a"
    return f"{mine / theirs:.2f}x"


def ratio_table(title: str, results: list[dict], key: str, units: dict[str, str],
                metric: str = "per_s", higher_is_better: bool = True) -> str:
    """Rows by ``key`` from the raw per-round results: asyncio's median absolute, runtime's and
    the alternative's ratio to asyncio with their spread over the rounds (``~``: inside the
    spread, see benchmarks.spread), runtime's peak memory over asyncio's, and the peaks."""
    from benchmarks.spread import paired_spread
    medians = median_of_rounds(results, key, fields=(metric,))
    rows: dict[str, dict[str, dict]] = {}
    for r in medians:
        rows.setdefault(str(r[key]), {})[r["loop"]] = r
    head = (f"{title:<28} {'unit':>9} {'asyncio':>10} {'runtime':>19} {'instead':>8} "
            f"{'its ratio':>19} {'mem rt/aio':>10} {'peak KiB rt/aio/uv':>22}")
    lines = [head, "-" * len(head)]
    for name, by_loop in rows.items():
        base = by_loop.get("asyncio", {}).get(metric)
        cells = []
        for loop in ("runtime", ALTERNATIVE):
            spread = paired_spread(results, key, name, loop, "asyncio", metric)
            if spread is not None and not higher_is_better:
                from benchmarks.spread import Spread
                spread = Spread(1 / spread.ratio, 1 / spread.high, 1 / spread.low, spread.rounds)
            cells.append(spread.format() if spread else
                         by_loop.get(loop, {}).get("error", "n/a")[:19])
        mem = "/".join(str(by_loop.get(l, {}).get("peak_kib", "-")) for l in LOOPS)
        unit = units.get(name, units.get(key, ""))
        lines.append(f"{name:<28} {unit:>9} {(_fmt(base) if base else 'n/a'):>10} {cells[0]:>19} "
                     f"{ALTERNATIVE:>8} {cells[1]:>19} {memory_ratio(by_loop):>10} {mem:>22}")
    return "\n".join(lines)


def spreads(results: list[dict], key: str, metric: str = "per_s") -> dict[str, dict]:
    """The ratios of the table as data, for the JSON: row -> loop -> Spread.as_dict()."""
    from benchmarks.spread import paired_spread
    out: dict[str, dict] = {}
    for name in dict.fromkeys(str(r[key]) for r in results):
        for loop in ("runtime", ALTERNATIVE):
            spread = paired_spread(results, key, name, loop, "asyncio", metric)
            if spread is not None:
                out.setdefault(name, {})[loop] = spread.as_dict()
    return out


# ------------------------------------------------------------------------------ TCP echo

def _vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


# The echo client of benchmarks.echo_client (the runtime colleague's) with the message size
# set: it reads its module-level MESSAGE at each send.
_CLIENT = ("import sys, benchmarks.echo_client as c; c.MESSAGE = b'x' * int(sys.argv.pop(1)); "
           "c.main()")


def echo_measure(loop: str, conns: int, size: int, warmup: float, seconds: float) -> dict:
    """Requests/s of one echo server (one message in flight per connection) and its peak memory."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.echo_server", "--loop", loop],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                              cwd=ROOT)
    result = {"case": f"echo {conns:>4} conn {size // 1024 and f'{size // 1024} KiB' or f'{size} B'}",
              "loop": loop, "connections": conns, "size": size}
    try:
        port = server.stdout.readline().strip()
        client = subprocess.Popen([sys.executable, "-c", _CLIENT, str(size), port, str(conns),
                                   str(warmup), str(seconds)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        try:
            base_kib = _vm_hwm_kib(server.pid)
            first = client.stdout.readline().split()
            second = client.stdout.readline().split()
            peak = _vm_hwm_kib(server.pid)
            _out, err = client.communicate(timeout=60)
        finally:
            kill_if_running(client)
        if first != ["start"] or len(second) != 3:
            last = (err or "").strip().splitlines()[-1:] or [f"printed {first} {second}"]
            result["error"] = f"client failed: {last[0][:80]}"
            return result
        result.update(per_s=int(second[1]) / seconds, peak_kib=peak, base_kib=base_kib)
        return result
    finally:
        stop_server(server)


def _echo_plan(quick: bool) -> tuple[float, float, int]:
    """(warm-up s, measured s, rounds) of each echo row."""
    return (0.3, 1.0, 2) if quick else (0.5, 2.0, 5)


def run_echo(quick: bool = False) -> dict:
    from benchmarks.http import raise_nofile
    raise_nofile(4096)
    warmup, seconds, rounds = _echo_plan(quick)
    results = [dict(echo_measure(loop, conns, size, warmup, seconds), round=r)
               for r in range(rounds)
               for size in ECHO_SIZES for conns in ECHO_CONNECTIONS for loop in LOOPS]
    return {"results": median_of_rounds(results, "case"), "raw": results,
            "ratios": spreads(results, "case"), "seconds_per_run": seconds, "rounds": rounds}


# ------------------------------------------------------------------------------- the suite

def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import uvloop
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "uvloop": uvloop.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def estimated_seconds(quick: bool, only: tuple[str, ...]) -> float:
    """What ``run`` will take, from its plan (rounds x rows x loops x each run's length plus the
    process start-ups measured on the 2-core machine); printed before the run starts."""
    from benchmarks import http, micro
    total = 0.0
    if "micro" in only:
        total += micro.estimated_seconds(quick)
    if "echo" in only:
        warmup, seconds, rounds = _echo_plan(quick)
        total += rounds * len(ECHO_SIZES) * len(ECHO_CONNECTIONS) * len(LOOPS) * (warmup + seconds + 0.8)
    if "http" in only:
        total += http.estimated_seconds(quick)
    return total


def compile_bytecode() -> None:
    """Compile the project's modules to bytecode (``__pycache__``) before any row starts.

    Every loop is then measured from bytecode, as installed code runs (pip compiles at install)
    and as asyncio and uvloop's own modules always do. Without it, a checkout run with
    PYTHONDONTWRITEBYTECODE=1 compiles the runtime's ~4,000 lines from source in every server
    it starts, and the compiler's peak, ~2 MiB of RSS the process keeps, was 10 of the 13-15%
    by which the runtime's servers peaked above asyncio's on the echo and HTTP rows."""
    import compileall
    for package in ("runtime", "diag", "examples", "benchmarks"):
        compileall.compile_dir(ROOT / package, quiet=2)


def run(quick: bool = False, only: tuple[str, ...] = ("micro", "echo", "http")) -> dict:
    compile_bytecode()
    report: dict = {"machine": machine(), "quick": quick}
    took: dict[str, float] = {}
    if "micro" in only:
        from benchmarks import micro
        t0 = time.monotonic()
        report["micro"] = micro.run(quick)
        took["micro"] = time.monotonic() - t0
    if "echo" in only:
        t0 = time.monotonic()
        report["echo"] = run_echo(quick)
        took["echo"] = time.monotonic() - t0
    if "http" in only:
        from benchmarks import http
        t0 = time.monotonic()
        report["http"] = http.run(quick)
        took["http"] = time.monotonic() - t0
    report["took_seconds"] = took
    return report


def render(report: dict) -> str:
    m = report["machine"]
    parts = [f"coroscope benchmarks, {m['date']}: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, "
             f"CPython {m['python']}, uvloop {m['uvloop']}{' (quick)' if report.get('quick') else ''}",
             "asyncio column: absolute (median of the rounds); runtime and the loop a user would pick "
             "instead: ratio to asyncio, higher is better, median of per-round ratios and their "
             "lowest-highest; ~: inside the spread (the rounds disagree on the side of 1.00x); "
             "mem rt/aio: runtime's peak over asyncio's; peak KiB: peak RSS of the process that ran the benchmark "
             "(echo and http: of the server)", ""]
    if "micro" in report:
        from benchmarks.micro import render as micro_render
        parts += [micro_render(report["micro"]), ""]
    if "echo" in report:
        parts += [ratio_table("TCP echo (one msg in flight)", report["echo"]["raw"], "case",
                              {"case": "req/s"}), ""]
    if "http" in report:
        from benchmarks.http import render as http_render
        parts += [http_render(report["http"]), ""]
    if report.get("took_seconds"):
        took = report["took_seconds"]
        parts.append(f"took {sum(took.values()) / 60:.1f} min ("
                     + ", ".join(f"{k} {v / 60:.1f}" for k, v in took.items()) + ")")
    return "\n".join(parts)
