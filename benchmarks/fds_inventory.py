"""How long the fd inventory of a big process takes: 10,000 open fds of every common kind.

    python -m benchmarks.fds_inventory [--quick]

A child process opens eventfds, pipes, unix socket pairs, TCP connections on 127.0.0.1, an
epoll watching a thousand fds, and files, then waits. We time (median of several runs):
``scan(pid)`` (full detail: fdinfo for anon inodes, socket tables), ``count_kinds(pid)`` (the
cheap sample the trend and the leak checker take), and ``lsof -p PID`` for comparison when lsof
is installed. The goal: the full inventory of 10,000 fds in under 0.5 s.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import textwrap
import time

from diag.fds.inventory import count_kinds, scan

HOLDER = textwrap.dedent("""
    import os, resource, select, socket, sys
    total = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_NOFILE, (total + 1000, total + 1000))
    keep = []
    share = total // 10
    for _ in range(share * 3):
        keep.append(os.eventfd(0))
    for _ in range(share):                 # 2 fds each
        keep.extend(os.pipe())
    for _ in range(share):                 # 2 fds each
        keep.extend(socket.socketpair())
    listener = socket.create_server(("127.0.0.1", 0), backlog=share)
    for _ in range(share // 2):            # 2 fds each: client and accepted side
        c = socket.create_connection(listener.getsockname())
        keep.append(c)
        keep.append(listener.accept()[0])
    ep = select.epoll()
    for fd in keep[: share]:
        ep.register(fd, select.EPOLLIN)
    for _ in range(total - (len(os.listdir("/proc/self/fd")) - 1)):   # listdir's own fd is not kept
        keep.append(open("/dev/null"))
    print(len(os.listdir("/proc/self/fd")) - 1, flush=True)
    sys.stdin.readline()
""")


def _median_time(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(quick: bool = False) -> dict:
    total = 2000 if quick else 10000
    repeat = 3 if quick else 7
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(total)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        nfds = int(proc.stdout.readline())
        inv = scan(proc.pid)
        results = {
            "fds": nfds,
            "rows": len(inv.rows),
            "kinds": inv.counts_by_kind(),
            "scan_s": _median_time(lambda: scan(proc.pid), repeat),
            "count_kinds_s": _median_time(lambda: count_kinds(proc.pid), repeat),
        }
        if shutil.which("lsof"):
            results["lsof_s"] = _median_time(
                lambda: subprocess.run(["lsof", "-n", "-P", "-p", str(proc.pid)], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL), max(1, repeat // 2))
        results["goal_s"] = 0.5
        results["meets_goal"] = results["scan_s"] < 0.5 if not quick else None
    finally:
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()
    return results


def render(results: dict) -> str:
    lines = [f"fd inventory of a process with {results['fds']} open fds "
             f"({', '.join(f'{n} {k}' for k, n in sorted(results['kinds'].items(), key=lambda kv: -kv[1]))})",
             f"{'what':<34}{'median':>12}"]
    lines.append(f"{'scan(pid)  (full detail)':<34}{results['scan_s'] * 1000:>10.1f} ms")
    lines.append(f"{'count_kinds(pid)  (kinds only)':<34}{results['count_kinds_s'] * 1000:>10.1f} ms")
    if "lsof_s" in results:
        lines.append(f"{'lsof -n -P -p PID  (comparison)':<34}{results['lsof_s'] * 1000:>10.1f} ms")
        lines.append(f"scan is {results['lsof_s'] / results['scan_s']:.1f}x faster than lsof")
    if results["meets_goal"] is not None:
        lines.append(f"goal: full scan under {results['goal_s']} s: {'met' if results['meets_goal'] else 'NOT met'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fds_inventory")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    results = run(quick=args.quick)
    print(render(results))
    return 0 if results["meets_goal"] in (True, None) else 1


if __name__ == "__main__":
    sys.exit(main())
