"""HTTP through wrk against the example service on runtime, asyncio and uvloop.

    python -m benchmarks.http [--quick]

wrk at 2, 400 and 10,000 keep-alive connections, a bounded duration each, against
``examples.http_service`` started fresh per (loop, connections). Reported: requests/s, p50 and p99
latency from wrk's --latency output, socket errors, and the server's peak RSS. 10,000
connections need more fds than the usual 1,024: this process raises its soft RLIMIT_NOFILE
(children inherit it), up to the hard limit; if that is not enough the row says so.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPS = ("runtime", "asyncio", "uvloop")
CONNECTIONS = (2, 400, 10_000)


def raise_nofile(wanted: int) -> int:
    from diag.doctor.target import raise_nofile_limit
    return raise_nofile_limit(wanted)


def _vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def measure(loop: str, connections: int, seconds: float) -> dict:
    from diag.doctor.load import LoadError, run_wrk
    from diag.doctor.target import Target
    result = {"case": f"http {connections:>5} conns", "loop": loop, "connections": connections}
    nofile = raise_nofile(connections * 2 + 1024)
    if nofile < connections + 64:
        result["error"] = f"RLIMIT_NOFILE {nofile}"
        return result
    with Target([sys.executable, "-m", "examples.http_service", "--loop", loop, "--backlog", "8192"],
                loop=None) as target:
        try:
            run_wrk(f"http://{target.host}:{target.port}/", min(connections, 50), 1)  # warm-up
            wrk = run_wrk(f"http://{target.host}:{target.port}/", connections, seconds,
                          threads=2, timeout_s=10)
        except LoadError as exc:
            result["error"] = str(exc)[:60]
            return result
        result.update(per_s=wrk.requests_per_s, requests=wrk.requests, errors=wrk.errors,
                      p50_ms=wrk.percentiles_ms.get("50"), p99_ms=wrk.percentiles_ms.get("99"),
                      peak_kib=_vm_hwm_kib(target.pid))
    return result


def run(quick: bool = False) -> dict:
    import shutil
    if not shutil.which("wrk"):
        return {"results": [], "skipped": "wrk is not installed"}
    from benchmarks.suite import median_of_rounds, spreads
    seconds, rounds = _plan(quick)
    results = [dict(measure(loop, conns, seconds), round=r) for r in range(rounds)
               for conns in CONNECTIONS for loop in LOOPS]
    return {"results": median_of_rounds(results, "case"), "raw": results,
            "ratios": spreads(results, "case"), "seconds_per_run": seconds, "rounds": rounds}


def _plan(quick: bool) -> tuple[float, int]:
    """(seconds of wrk per row, rounds)."""
    return (2, 2) if quick else (4, 3)


def estimated_seconds(quick: bool) -> float:
    """The plan's length: per row, wrk's run, its 1 s warm-up and the server's start and stop."""
    import shutil
    if not shutil.which("wrk"):
        return 0.0
    seconds, rounds = _plan(quick)
    return rounds * len(CONNECTIONS) * len(LOOPS) * (seconds + 1 + 1.5)


def render(report: dict) -> str:
    from benchmarks.suite import ratio_table
    if report.get("skipped"):
        return f"HTTP (wrk): skipped: {report['skipped']}"
    lines = [ratio_table("HTTP via wrk, keep-alive", report.get("raw", report["results"]), "case",
                         {"case": "req/s"})]
    lines.append("latency p50 / p99 ms (runtime | asyncio | uvloop), socket errors:")
    rows: dict[str, dict[str, dict]] = {}
    for r in report["results"]:
        rows.setdefault(r["case"], {})[r["loop"]] = r
    for case, by_loop in rows.items():
        cells = []
        for loop in LOOPS:
            r = by_loop.get(loop, {})
            if "per_s" not in r:
                cells.append(f"{r.get('error', 'n/a')[:17]:>17}")
            else:
                cells.append(f"{r['p50_ms']:>7.2f} / {r['p99_ms']:>7.2f}")
        errors = "/".join(str(by_loop.get(l, {}).get("errors", "-")) for l in LOOPS)
        lines.append(f"  {case:<26} {' | '.join(cells)}   errors {errors}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(render(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
