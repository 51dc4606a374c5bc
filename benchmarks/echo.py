"""Echo server on runtime, asyncio and uvloop: requests/s and syscalls per request, in one run.

    python -m benchmarks.echo [--quick] [--json FILE]

For each loop and each connection count (1 and 50 keep-alive connections, 64-byte messages, one
in flight per connection) a fresh server process (``benchmarks.echo_server``) is loaded by a
client process on uvloop (``benchmarks.echo_client``). The server's syscalls are counted from
outside, by eBPF on the ``raw_syscalls:sys_enter`` tracepoint filtered on the server's pid, over
exactly the window in which the client counts requests (the client lets the requests in flight
finish before and after it, so the server is idle at both edges and the counts are exact);
nothing in the server changes and it is not slowed down. The client's and the server's CPU use in the window are reported as well: a
server near 100% with a client below it means the server was the limit.

Targets (issue 2): runtime at most 2.1 syscalls per request at 50 connections, no mmap, munmap
or mremap per request, at least 1.2x the requests per second of asyncio.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.procs import kill_if_running, stop_server

ROOT = Path(__file__).resolve().parent.parent
LOOPS = ("runtime", "asyncio", "uvloop")
CONNECTIONS = (1, 50)
MAP_SYSCALLS = ("mmap", "munmap", "mremap", "brk")

_BPF_PROGRAM = r"""
BPF_ARRAY(target, u32, 1);
BPF_HASH(counts, u32, u64, 1024);
TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    int zero = 0;
    u32 *want = target.lookup(&zero);
    if (!want || *want != tgid)
        return 0;
    u32 nr = args->id;
    counts.increment(nr);
    return 0;
}
"""


class SyscallCounter:
    """Counts one process's syscalls by name with eBPF; retargeted per run (compiled once)."""

    def __init__(self):
        from bcc import BPF
        from bcc.syscall import syscall_name

        self._bpf = BPF(text=_BPF_PROGRAM.encode())
        self._name = syscall_name
        self._target = self._bpf[b"target"]
        self._counts = self._bpf[b"counts"]

    def watch(self, pid: int) -> None:
        self._target[self._target.Key(0)] = self._target.Leaf(pid)
        self._counts.clear()

    def reset(self) -> None:
        self._counts.clear()

    def snapshot(self) -> dict[str, int]:
        return {self._name(k.value).decode(): v.value for k, v in self._counts.items()}

    def close(self) -> None:
        self._bpf.cleanup()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(loop: str, conns: int, warmup: float, seconds: float,
            counter: SyscallCounter | None) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.echo_server", "--loop", loop],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        port = int(server.stdout.readline())
        client = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.echo_client", str(port), str(conns), str(warmup), str(seconds),
             "sync"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        try:
            if counter is not None:
                counter.watch(server.pid)
            line = client.stdout.readline().split()
            if line != ["ready"]:
                raise RuntimeError(f"echo client did not start: {line}")
            # The server is idle now (no request in flight): the window starts clean...
            if counter is not None:
                counter.reset()
            cpu0 = _cpu_seconds(server.pid)
            client.stdin.write("go\n")
            client.stdin.flush()
            line = client.stdout.readline().split()
            # ...and ends clean: the client let every request in flight finish.
            syscalls = counter.snapshot() if counter is not None else None
            server_cpu = _cpu_seconds(server.pid) - cpu0
            client.stdin.write("bye\n")
            client.stdin.flush()
            if len(line) != 4 or line[0] != "end":
                raise RuntimeError(f"echo client failed: {line}")
            requests, client_cpu, elapsed = int(line[1]), float(line[2]), float(line[3])
            client.wait(timeout=30)
        finally:
            kill_if_running(client)
    finally:
        stop_server(server)
    result = {
        "loop": loop, "connections": conns, "requests": requests,
        "rps": requests / elapsed,
        "server_cpu": server_cpu / elapsed, "client_cpu": client_cpu / elapsed,
        # Requests per second of server CPU: the loop's efficiency, less sensitive than req/s
        # to what else the machine runs.
        "requests_per_cpu_second": requests / server_cpu if server_cpu else None,
    }
    if syscalls is not None:
        total = sum(syscalls.values())
        result["syscalls_per_request"] = total / max(requests, 1)
        result["syscalls"] = syscalls
        result["by_name_per_request"] = {name: n / max(requests, 1) for name, n in
                                         sorted(syscalls.items(), key=lambda kv: -kv[1])}
        result["map_syscalls_per_request"] = sum(syscalls.get(n, 0) for n in MAP_SYSCALLS) / max(requests, 1)
    return result


def _combine(runs: list[dict]) -> dict:
    """Rounds of one (loop, connections): the median round's rates, syscalls summed over all."""
    runs = sorted(runs, key=lambda r: r["rps"])
    combined = dict(runs[len(runs) // 2])
    combined["rounds_rps"] = [round(r["rps"]) for r in runs]
    if "syscalls" in combined:
        requests = sum(r["requests"] for r in runs)
        syscalls: dict[str, int] = {}
        for r in runs:
            for name, n in r["syscalls"].items():
                syscalls[name] = syscalls.get(name, 0) + n
        combined.update(
            requests=requests, syscalls=syscalls,
            syscalls_per_request=sum(syscalls.values()) / max(requests, 1),
            by_name_per_request={name: n / max(requests, 1) for name, n in
                                 sorted(syscalls.items(), key=lambda kv: -kv[1])},
            map_syscalls_per_request=sum(syscalls.get(n, 0) for n in MAP_SYSCALLS) / max(requests, 1))
    return combined


def run(quick: bool = False) -> dict:
    """Every loop at every connection count; rounds interleave the loops so that a change in
    the machine's load (colleagues share the cores) hits all of them alike."""
    warmup, seconds, rounds = (0.3, 1.0, 1) if quick else (0.5, 2.0, 3)
    try:
        counter = SyscallCounter()
        backend = "eBPF (bcc, raw_syscalls:sys_enter)"
    except Exception as exc:  # not root, no bcc, no headers: rps only, and say so
        counter, backend = None, f"none ({type(exc).__name__}: {exc})"
    runs: dict[tuple[str, int], list[dict]] = {}
    try:
        for _ in range(rounds):
            for conns in CONNECTIONS:
                for loop in LOOPS:
                    runs.setdefault((loop, conns), []).append(measure(loop, conns, warmup, seconds, counter))
    finally:
        if counter is not None:
            counter.close()
    results = [_combine(runs[(loop, conns)]) for conns in CONNECTIONS for loop in LOOPS]
    by_key = {(r["loop"], r["connections"]): r for r in results}
    ratios = {conns: by_key[("runtime", conns)]["rps"] / by_key[("asyncio", conns)]["rps"]
              for conns in CONNECTIONS}
    return {"syscall_counter": backend, "seconds_per_run": seconds, "rounds": rounds,
            "results": results, "runtime_vs_asyncio_rps": ratios}


def render(report: dict) -> str:
    head = (f"{'loop':<8} {'conns':>5} {'req/s':>9} {'req/cpu-s':>9} {'syscalls/req':>12} "
            f"{'mmap-family/req':>15} {'server cpu':>10} {'client cpu':>10}  top syscalls per request")
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        sc = r.get("syscalls_per_request")
        top = ", ".join(f"{n} {v:.2f}" for n, v in list(r.get("by_name_per_request", {}).items())[:4])
        lines.append(
            f"{r['loop']:<8} {r['connections']:>5} {r['rps']:>9.0f} "
            f"{(format(r['requests_per_cpu_second'], '.0f') if r.get('requests_per_cpu_second') else 'n/a'):>9} "
            f"{(f'{sc:.2f}' if sc is not None else 'n/a'):>12} "
            f"{(format(r['map_syscalls_per_request'], '.3f') if sc is not None else 'n/a'):>15} "
            f"{r['server_cpu']:>10.0%} {r['client_cpu']:>10.0%}  {top}")
    lines.append("-" * len(head))
    ratios = ", ".join(f"{c} conn{'s' if c > 1 else ''}: {v:.2f}x"
                       for c, v in report["runtime_vs_asyncio_rps"].items())
    lines.append(f"runtime vs asyncio req/s: {ratios}")
    lines.append(f"syscalls counted by: {report['syscall_counter']}; req/s: median of "
                 f"{report['rounds']} round(s) of {report['seconds_per_run']} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 1 s instead of three of 2 s")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    report = run(quick=args.quick)
    print(render(report))
    if args.json:
        from diag.model.base import write_json_atomic

        write_json_atomic(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
