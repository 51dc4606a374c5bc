"""What the eBPF syscall counter costs the service it watches: echo throughput with
``coroscope syscalls`` attached, as a share of the same run unattached.

Both runs are the same program, ``examples/syscall_echo.py`` (an echo server marking every
message as a request, with tracing on, and its load in a separate client process), so the only
difference is the eBPF program on every syscall of the server (slot read, two map updates, the
request's sequence). The target is >= 90% of unattached throughput. Runs alternate, and the
median of each side is compared, because the other users of this machine's cores add noise.

    python -m benchmarks.syscalls_overhead [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"echo loop=(\S+) requests=(\d+) seconds=([\d.]+) client_cpu=([\d.]+) server_cpu=([\d.]+)")
TARGET = 0.90


def _echo_cmd(seconds: float, connections: int) -> list[str]:
    return [sys.executable, "examples/syscall_echo.py", "--seconds", str(seconds),
            "--connections", str(connections), "--start-delay", "0.2"]


def run_once(loop: str, seconds: float, connections: int, attached: bool) -> dict:
    from diag.bootstrap import target_environment

    cmd = _echo_cmd(seconds, connections)
    report = None
    if attached:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.json"
            p = subprocess.run([sys.executable, "-m", "diag.cli", "syscalls", "--loop", loop,
                                "--backend", "bpf", "--json", str(out), "--", *cmd],
                               capture_output=True, text=True, cwd=ROOT, timeout=120)
            if out.exists():
                report = json.loads(out.read_text())
    else:
        env = target_environment(loop=loop, trace=True)
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    m = LINE.search(p.stdout)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"echo run failed ({'attached' if attached else 'unattached'}): "
                           f"{(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    result = {"requests": int(m.group(2)), "rps": int(m.group(2)) / float(m.group(3)),
              "client_cpu": float(m.group(4)) / float(m.group(3)),
              # The eBPF program runs in the server's syscalls, charged to the server's CPU time:
              # CPU per request is the steadier measure on a shared machine.
              "server_cpu_us_per_request": float(m.group(5)) / max(1, int(m.group(2))) * 1e6}
    if report is not None:
        result["syscalls_per_request_direct"] = report["per_request"]["total"]["mean"]
        result["requests_counted"] = report["requests"]
    return result


def run(quick: bool = False) -> dict:
    loops = ["runtime"] if quick else ["runtime", "asyncio"]
    rounds = 1 if quick else 3
    seconds = 1.0 if quick else 2.0
    connections = 50
    results = {}
    for loop in loops:
        plain, watched = [], []
        for _ in range(rounds):
            plain.append(run_once(loop, seconds, connections, attached=False))
            watched.append(run_once(loop, seconds, connections, attached=True))
        p = statistics.median(r["rps"] for r in plain)
        w = statistics.median(r["rps"] for r in watched)
        pc = statistics.median(r["server_cpu_us_per_request"] for r in plain)
        wc = statistics.median(r["server_cpu_us_per_request"] for r in watched)
        results[loop] = {
            "unattached_rps": round(p), "attached_rps": round(w), "ratio": round(w / p, 3),
            "cpu_us_per_request_unattached": round(pc, 2), "cpu_us_per_request_attached": round(wc, 2),
            "cpu_ratio": round(pc / wc, 3),     # unattached/attached: the throughput share CPU allows
            "meets_target": w / p >= TARGET,
            "client_cpu_unattached": round(statistics.median(r["client_cpu"] for r in plain), 2),
            "direct_syscalls_per_request": watched[-1].get("syscalls_per_request_direct"),
            "runs": {"unattached": plain, "attached": watched},
        }
    return {"target_ratio": TARGET, "connections": connections, "seconds": seconds,
            "rounds": rounds, "loops": results}


def render(res: dict) -> str:
    lines = [f"echo throughput with the bpf syscall counter attached ({res['connections']} connections, "
             f"{res['seconds']} s x {res['rounds']} rounds, medians)",
             f"{'loop':<10}{'unattached rps':>16}{'attached rps':>14}{'ratio':>8}{'target':>8}"
             f"{'µs CPU/req':>12}{'attached':>10}{'cpu ratio':>11}{'client cpu':>12}{'direct/req':>12}"]
    for loop, r in res["loops"].items():
        lines.append(f"{loop:<10}{r['unattached_rps']:>16}{r['attached_rps']:>14}{r['ratio']:>8.3f}"
                     f"{'ok' if r['meets_target'] else 'MISS':>8}{r['cpu_us_per_request_unattached']:>12.1f}"
                     f"{r['cpu_us_per_request_attached']:>10.1f}{r['cpu_ratio']:>11.3f}"
                     f"{r['client_cpu_unattached']:>12.2f}"
                     f"{r['direct_syscalls_per_request'] or 0:>12.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("syscalls_overhead: needs root (eBPF)", file=sys.stderr)
        return 2
    res = run(quick=args.quick)
    print(render(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0 if all(r["meets_target"] for r in res["loops"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
