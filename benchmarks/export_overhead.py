"""Does a Prometheus scrape cost the target? Throughput with `coroscope export` scraped every
second, against none.

    python -m benchmarks.export_overhead [--quick] [--rounds N] [--json FILE]

The target is the dashboard benchmark's (``benchmarks.dashboard_overhead``: ping-pong pairs on
the traced runtime, each round trip a marked request with a child task, some 100,000 ring
records a second), counting its own round trips over a fixed time. Ways, interleaved round by
round so drift in the machine hits each alike:

    alone              nothing attached
    scraped            `coroscope export --pid` running (its follower reads the ring every
                       0.1 s within its CPU budget) and /metrics fetched once a second
    alone pinned       the target alone on one core
    scraped pinned     the target on that core, the exporter and the scraper on the other

Reported per way (medians over the rounds): requests per second and the ratio to its
baseline, with the baseline's own spread ((max - min) / median of its rounds) as the noise
floor it is judged against (as in dashboard_overhead: a fixed threshold would call a busy
machine's noise a cost); the exporter's CPU as a share of one core; scrapes done; the ring
records the exporter skipped (over budget) and lost (overwritten first), from its own metrics.

Unpinned, the exporter's CPU competes with the target's on two cores: a cost of the exporter's
CPU use. Pinned, the target has its core to itself, so what remains is work the target does
because it is exported: the expected answer there is none (shared memory and /proc only).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import psutil

from benchmarks.dashboard_overhead import PAIRS, _finish, _go, _spread, _start_target, _verdict
from benchmarks.procs import kill_if_running, pinned_to, two_cores

ROOT = Path(__file__).resolve().parent.parent
SCRAPE_EVERY_S = 1.0


def run_alone(seconds: float, pinned: tuple[int, int] | None = None) -> dict:
    proc = _start_target(seconds, pinned[0] if pinned else None)
    _go(proc)
    return _finish(proc)


def _counter(text: str, name: str) -> int:
    m = re.search(rf"^{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M)
    return int(float(m.group(1))) if m else 0


def run_scraped(seconds: float, pinned: tuple[int, int] | None = None) -> dict:
    proc = _start_target(seconds, pinned[0] if pinned else None)
    exporter = subprocess.Popen([sys.executable, "-m", "diag.cli", "export", "--listen",
                                 "127.0.0.1:0", "--pid", str(proc.pid)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True,
                                preexec_fn=pinned_to(pinned[1] if pinned else None))
    try:
        url = exporter.stdout.readline().split()[3]
        everywhere = os.sched_getaffinity(0)
        done = threading.Event()
        scrapes, last = [0], [""]

        def scrape():
            if pinned:
                os.sched_setaffinity(0, {pinned[1]})        # this thread only
            while not done.wait(SCRAPE_EVERY_S):
                with urllib.request.urlopen(url, timeout=30) as resp:
                    text = resp.read().decode()
                scrapes[0] += 1
                if "coroscope_probe_records_lost_total{" in text:
                    last[0] = text           # the last scrape while the target ran

        scraper = threading.Thread(target=scrape)
        scraper.start()
        cpu0 = sum(psutil.Process(exporter.pid).cpu_times()[:2])
        _go(proc)
        result = _finish(proc)
        cpu = sum(psutil.Process(exporter.pid).cpu_times()[:2]) - cpu0
        done.set()
        scraper.join()
        os.sched_setaffinity(0, everywhere)
        result.update(exporter_cpu_share=cpu / seconds, scrapes=scrapes[0],
                      skipped=_counter(last[0], "coroscope_probe_records_skipped_total"),
                      lost=_counter(last[0], "coroscope_probe_records_lost_total"))
        return result
    finally:
        exporter.terminate()                 # it stops on SIGTERM, closing its readers
        try:
            exporter.wait(timeout=30)
        except subprocess.TimeoutExpired:
            exporter.kill()
            exporter.wait()
        kill_if_running(proc)


WAYS = {
    "alone": (run_alone, "alone"),
    "scraped": (run_scraped, "alone"),
    "alone pinned": (lambda s: run_alone(s, two_cores()), "alone pinned"),
    "scraped pinned": (lambda s: run_scraped(s, two_cores()), "alone pinned"),
}


def run(quick: bool = False, rounds: int | None = None) -> dict:
    seconds = 3.0 if quick else 6.0
    rounds = rounds or (2 if quick else 3)
    ways = {w: v for w, v in WAYS.items() if two_cores() or "pinned" not in w}
    runs: dict[str, list[dict]] = {way: [] for way in ways}
    for _ in range(rounds):
        for way, (fn, _base) in ways.items():
            runs[way].append(fn(seconds))
    out = {"seconds": seconds, "rounds": rounds, "pairs": PAIRS, "cpus": two_cores(),
           "scrape_every_s": SCRAPE_EVERY_S, "ways": {}}
    for way, results in runs.items():
        base = runs[ways[way][1]]
        base_rps = statistics.median(r["rps"] for r in base)
        noise = _spread([r["rps"] for r in base])
        rps = statistics.median(r["rps"] for r in results)
        row = {"baseline": ways[way][1], "rps_median": round(rps, 1),
               "rps_runs": [round(r["rps"], 1) for r in results],
               "ratio": round(rps / base_rps, 3), "baseline_spread": round(noise, 3)}
        if way != ways[way][1]:
            row["throughput_cost"] = _verdict(rps / base_rps, noise)
            row.update(
                exporter_cpu_share=round(statistics.median(r["exporter_cpu_share"]
                                                           for r in results), 3),
                scrapes=[r["scrapes"] for r in results],
                records_skipped=[r["skipped"] for r in results],
                records_lost=[r["lost"] for r in results])
        out["ways"][way] = row
    return out


def render(report: dict) -> str:
    lines = [f"export overhead: {report['pairs']} ping-pong pairs, traced runtime, /metrics every "
             f"{report['scrape_every_s']:g} s, {report['seconds']} s x {report['rounds']} rounds "
             f"(medians; pinned on cores {report['cpus']})",
             f"{'way':<15} {'req/s':>8} {'ratio':>6} {'spread':>7} {'exp cpu':>7} {'scrapes':>7} "
             f"{'skipped':>9} {'lost':>7}  cost"]
    for way, r in report["ways"].items():
        share = "-" if "exporter_cpu_share" not in r else f"{100 * r['exporter_cpu_share']:.1f}%"
        med = lambda key: "-" if key not in r else str(int(statistics.median(r[key])))  # noqa: E731
        lines.append(f"{way:<15} {r['rps_median']:>8.0f} {r['ratio']:>6.3f} "
                     f"{100 * r['baseline_spread']:>6.1f}% {share:>7} {med('scrapes'):>7} "
                     f"{med('records_skipped'):>9} {med('records_lost'):>7}  "
                     f"{r.get('throughput_cost', 'baseline')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, help="rounds of every way (default 3, quick 2)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    report = run(quick=args.quick, rounds=args.rounds)
    print(render(report))
    if args.json:
        from diag.model.base import write_json_atomic
        write_json_atomic(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
