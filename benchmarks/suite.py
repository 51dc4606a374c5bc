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


def ratio_table(title: str, results: list[dict], key: str, units: dict[str, str],
                metric: str = "per_s", extra: tuple[str, ...] = ("peak_kib",)) -> str:
    """Rows by ``key``; asyncio absolute, runtime and uvloop as x-asyncio; peak memory per loop."""
    rows: dict[str, dict[str, dict]] = {}
    for r in results:
        rows.setdefault(str(r[key]), {})[r["loop"]] = r
    head = (f"{title:<28} {'unit':>10} {'asyncio':>11} {'runtime':>9} {'uvloop':>9}   "
            f"{'peak KiB rt/aio/uv':>22}")
    lines = [head, "-" * len(head)]
    for name, by_loop in rows.items():
        base = by_loop.get("asyncio", {}).get(metric)
        cells = []
        for loop in ("runtime", "uvloop"):
            value = by_loop.get(loop, {}).get(metric)
            cells.append(f"{value / base:.2f}x" if value and base else
                         by_loop.get(loop, {}).get("error", "n/a")[:9])
        mem = "/".join(str(by_loop.get(l, {}).get("peak_kib", "-")) for l in LOOPS)
        unit = units.get(name, units.get(key, ""))
        lines.append(f"{name:<28} {unit:>10} {(_fmt(base) if base else 'n/a'):>11} {cells[0]:>9} "
                     f"{cells[1]:>9}   {mem:>22}")
    return "\n".join(lines)


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


def run_echo(quick: bool = False) -> dict:
    from benchmarks.http import raise_nofile
    raise_nofile(4096)
    warmup, seconds, rounds = (0.3, 1.0, 1) if quick else (0.5, 2.0, 3)
    results = [echo_measure(loop, conns, size, warmup, seconds) for _ in range(rounds)
               for size in ECHO_SIZES for conns in ECHO_CONNECTIONS for loop in LOOPS]
    return {"results": median_of_rounds(results, "case"), "seconds_per_run": seconds,
            "rounds": rounds}


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


def run(quick: bool = False, only: tuple[str, ...] = ("micro", "echo", "http")) -> dict:
    report: dict = {"machine": machine(), "quick": quick}
    if "micro" in only:
        from benchmarks import micro
        report["micro"] = micro.run(quick)
    if "echo" in only:
        report["echo"] = run_echo(quick)
    if "http" in only:
        from benchmarks import http
        report["http"] = http.run(quick)
    return report


def render(report: dict) -> str:
    m = report["machine"]
    parts = [f"coroscope benchmarks, {m['date']}: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, "
             f"CPython {m['python']}, uvloop {m['uvloop']}{' (quick)' if report.get('quick') else ''}",
             "asyncio column: absolute; runtime and uvloop: ratio to asyncio (higher is better); "
             "peak KiB: memory growth during the benchmark (echo and http: server peak RSS)", ""]
    if "micro" in report:
        parts += [ratio_table("loop micro-benchmarks", report["micro"]["results"], "bench",
                              report["micro"]["units"]), ""]
    if "echo" in report:
        parts += [ratio_table("TCP echo (one msg in flight)", report["echo"]["results"], "case",
                              {"case": "req/s"}), ""]
    if "http" in report:
        from benchmarks.http import render as http_render
        parts += [http_render(report["http"]), ""]
    return "\n".join(parts)
