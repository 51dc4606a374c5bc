"""``coroscope bt --json`` on processes with many suspended tasks: the memory reader against gdb.

    python -m benchmarks.bt_scale [--quick] [--loop asyncio|runtime] [--sizes 100,10000]

For each size a fresh target (examples/suspended_tasks.py with ``--extra``: every kind of wait
plus that many extra tasks, half sleeping in a 3-deep chain, half waiting on an Event) is
started under examples/pause_meter.py: a thread inside the target stamping 1 ms ticks that
writes down every gap over 2 ms.  When it is ready, each way of reading it is timed, best of ``REPEATS``, and
the task count checked:

* ``reader``: ``coroscope bt PID --json`` (process_vm_readv; the target keeps running);
* ``gdb``: ``coroscope bt PID --gdb --json`` (gdb attaches, stops the target, reads, detaches).

"command s" is the whole command (interpreter start, read, JSON); "read s" is the reader's own
walk (the document's ``seconds``).  "longest pause" is the longest gap between two ticks of the
target's thread while that command ran: what the service felt.  The 1 s target is for the
whole command (what a user waits for), not the walk alone.  "idle pause" is the same meter
over as long a window with nothing reading: the noise floor of a shared 2-core machine, which a
pause should be judged against.  Targets (issue 17): 10,000 tasks under 1 s, no pause over
10 ms.  Reported here, never asserted in tests.

The commands run from bytecode, as an installed coroscope does (pip compiles a distribution's
modules when it installs it): each is run once unmeasured with PYTHONPYCACHEPREFIX set to a
directory of this run's temporary one, and PYTHONDONTWRITEBYTECODE (which some machines set)
dropped for them.  Without it every command compiles every module it imports, about 0.8 s on
this 2-core machine, a cost no installed copy pays.  The directory goes with the run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_TASKS = 25           # tasks the example has before --extra
REPEATS = 3
TARGET_S = {10_000: 1.0}
TARGET_PAUSE_S = 0.010


def longest_gap(ticks: Path, start: float, end: float) -> float:
    """The longest tick gap that overlaps [start, end] (monotonic clock, shared by processes)."""
    worst = 0.0
    try:
        text = ticks.read_text()
    except FileNotFoundError:
        return 0.0
    for line in text.splitlines():
        a, b = (float(x) for x in line.split())
        if b >= start and a <= end:
            worst = max(worst, b - a)
    return worst


def bytecode_env(tmp: str) -> dict:
    """The environment of a measured command: compiled modules kept under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
    return env


def run_once(cmd: list[str], ticks: Path, env: dict | None = None) -> dict:
    start = time.monotonic()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    end = time.monotonic()
    time.sleep(0.05)  # let the ticker write the gap that ended with the command
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return {"s": end - start, "pause_s": longest_gap(ticks, start, end),
            "found": len(json.loads(r.stdout)), "window": (start, end)}


def reader_seconds(pid: int) -> float:
    from diag.backtrace.reader import collect_document
    return collect_document(pid)["seconds"]


def measure(total: int, loop: str) -> dict:
    extra = max(0, total - BASE_TASKS)
    with tempfile.TemporaryDirectory(prefix="coroscope-bt-scale-") as tmp:
        ticks = Path(tmp) / "ticks"
        target = subprocess.Popen([sys.executable, "-m", "examples.pause_meter", str(ticks),
                                   "examples.suspended_tasks", "--loop", loop, "--extra", str(extra)],
                                  cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            info = json.loads(target.stdout.readline())
            pid = str(info["pid"])
            base = [sys.executable, "-m", "diag.cli", "bt", pid, "--json"]
            row = {"tasks": BASE_TASKS + extra}
            env = bytecode_env(tmp)
            for name, cmd in (("reader", base), ("gdb", base + ["--gdb"])):
                run_once(cmd, ticks, env)        # compiles what the command imports
                runs = [run_once(cmd, ticks, env) for _ in range(REPEATS)]
                row[name] = {"best_s": min(r["s"] for r in runs),
                             "longest_pause_s": max(r["pause_s"] for r in runs),
                             "found": runs[-1]["found"]}
            row["reader"]["read_s"] = min(reader_seconds(info["pid"]) for _ in range(REPEATS))
            quiet_for = row["reader"]["best_s"]
            start = time.monotonic()
            time.sleep(quiet_for)
            row["idle_pause_s"] = longest_gap(ticks, start, time.monotonic())
        finally:
            target.kill()
            target.wait()
    r = row["reader"]
    row["ok"] = (r["found"] == row["tasks"] == row["gdb"]["found"]
                 and r["best_s"] < TARGET_S.get(row["tasks"], float("inf"))
                 and r["longest_pause_s"] <= TARGET_PAUSE_S)
    return row


def run(sizes=(100, 10_000), loop: str = "asyncio") -> dict:
    rows = [measure(n, loop) for n in sizes]
    print(f"coroscope bt --json, {loop} loop, CPython {sys.version_info[0]}.{sys.version_info[1]}, "
          f"best of {REPEATS}")
    print(f"{'tasks':>7} {'how':>7} {'found':>7} {'command s':>10} {'read s':>8} "
          f"{'longest pause ms':>17} {'idle pause ms':>14}")
    for row in rows:
        for how in ("reader", "gdb"):
            r = row[how]
            read = f"{r['read_s']:.3f}" if "read_s" in r else "-"
            print(f"{row['tasks']:>7} {how:>7} {r['found']:>7} {r['best_s']:>10.3f} {read:>8} "
                  f"{r['longest_pause_s'] * 1000:>17.1f} {row['idle_pause_s'] * 1000:>14.1f}")
    print(f"targets: `coroscope bt` on 10,000 tasks in under {TARGET_S[10_000]:g} s, the whole command; no pause of the target over "
          f"{TARGET_PAUSE_S * 1000:g} ms (pauses of 2 ms or less are not recorded)")
    print("met" if all(r["ok"] for r in rows) else "NOT met")
    return {"loop": loop, "rows": rows, "ok": all(r["ok"] for r in rows)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 tasks")
    parser.add_argument("--loop", choices=["asyncio", "runtime"], default="asyncio")
    parser.add_argument("--sizes", help="comma-separated task counts (default 100,10000)")
    args = parser.parse_args(argv)
    sizes = (100, 1000) if args.quick else (100, 10_000)
    if args.sizes:
        sizes = tuple(int(x) for x in args.sizes.split(","))
    os.umask(0o077)
    return 0 if run(sizes, args.loop)["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
