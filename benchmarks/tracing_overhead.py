"""What the tracepoints cost: echo throughput on the runtime with them compiled out, off, and on.

    python -m benchmarks.tracing_overhead [--quick] [--json FILE]

Three builds of the same runtime serve the echo benchmark's server (``benchmarks.echo_server``,
loaded by ``benchmarks.echo_client`` on uvloop, one 64-byte message in flight per connection):

- ``removed``: the runtime's modules compiled with every ``TRACE.on`` replaced by the constant
  False (an AST rewrite at import time, ``_StrippedLoader``). CPython's compiler drops
  ``if False:`` blocks, so this is the loop as if the tracepoints had never been written;
- ``off``: the runtime as shipped, tracing off: each tracepoint costs one attribute test;
- ``on``: tracing on, every record written into the probe file's ring (nobody reading).

Runs alternate between the builds, ``repeats`` times, and each build's median requests/s is
compared with ``removed``. Targets (issue 3): off within 3%, on within 15%. The box has two
cores shared by client, server and whatever else runs: read the ratios, not the absolute rates,
and rerun when the spread column is large.
"""
from __future__ import annotations

import argparse
import ast
import importlib.abc
import importlib.machinery
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILDS = ("removed", "off", "on")
TARGET_OFF, TARGET_ON = 0.03, 0.15
# Modules of the runtime that hold tracepoints (the tracer's own modules are not rewritten).
_NOT_REWRITTEN = {"runtime.tracing", "runtime.probefile", "runtime.requests"}


# ------------------------------------------------------------------ the "removed" build
class _NoTrace(ast.NodeTransformer):
    """``TRACE.on`` -> ``False``: the compiler then drops the guarded blocks."""

    def visit_Attribute(self, node):
        self.generic_visit(node)
        if (node.attr == "on" and isinstance(node.value, ast.Name) and node.value.id == "TRACE"
                and isinstance(node.ctx, ast.Load)):
            return ast.copy_location(ast.Constant(False), node)
        return node


class _StrippedLoader(importlib.machinery.SourceFileLoader):
    def source_to_code(self, data, path, *, _optimize=-1):
        tree = _NoTrace().visit(ast.parse(data, filename=path))
        return compile(ast.fix_missing_locations(tree), path, "exec", dont_inherit=True)

    def get_code(self, fullname):          # never use (or write) the normal build's .pyc
        return self.source_to_code(self.get_data(self.get_filename(fullname)), self.get_filename(fullname))


class _StrippedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "runtime" and not fullname.startswith("runtime."):
            return None
        if fullname in _NOT_REWRITTEN:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not str(spec.origin).endswith(".py"):
            return spec
        spec.loader = _StrippedLoader(fullname, spec.origin)
        return spec


def count_tracepoints_removed() -> int:
    """How many ``TRACE.on`` tests the rewrite removes from the runtime's modules."""
    total = 0
    for path in sorted((ROOT / "runtime").glob("*.py")):
        if f"runtime.{path.stem}" in _NOT_REWRITTEN:
            continue
        tree = ast.parse(path.read_text())
        total += sum(1 for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "on"
                     and isinstance(n.value, ast.Name) and n.value.id == "TRACE")
    return total


def serve(build: str) -> None:
    """The server process: prepare the build, then run the echo benchmark's server."""
    if build == "removed":
        sys.meta_path.insert(0, _StrippedFinder())
    import runtime.loop
    if build == "on":
        from runtime import tracing
        tracing.enable()
    if build == "removed":
        assert isinstance(runtime.loop.__loader__, _StrippedLoader)
    sys.argv = ["echo_server", "--loop", "runtime"]
    from benchmarks import echo_server
    echo_server.main()


# ---------------------------------------------------------------------------- measuring
def measure(build: str, conns: int, warmup: float, seconds: float) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("COROSCOPE_TRACE", None)
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.tracing_overhead", "--serve", build],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        port = int(server.stdout.readline())
        client = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.echo_client", str(port), str(conns), str(warmup), str(seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        try:
            if client.stdout.readline().split() != ["ready"]:
                raise RuntimeError("echo client did not start")
            client.stdin.write("go\n")
            client.stdin.flush()
            line = client.stdout.readline().split()
            if len(line) != 4 or line[0] != "end":
                raise RuntimeError(f"echo client failed: {line}")
            requests, elapsed = int(line[1]), float(line[3])
            client.stdin.close()           # the client waits for a line (or EOF) before it goes
            client.wait(timeout=30)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return {"build": build, "connections": conns, "requests": requests, "rps": requests / elapsed}


def run(quick: bool = False) -> dict:
    warmup, seconds, repeats = (0.3, 1.0, 1) if quick else (0.5, 2.0, 5)
    connections = (50,) if quick else (1, 50)
    runs = []
    for conns in connections:
        for _ in range(repeats):
            for build in BUILDS:          # interleaved, so drift in the machine hits every build
                runs.append(measure(build, conns, warmup, seconds))
    summary = {}
    for conns in connections:
        med = {b: statistics.median(r["rps"] for r in runs if r["build"] == b and r["connections"] == conns)
               for b in BUILDS}
        spread = {b: (max(r["rps"] for r in runs if r["build"] == b and r["connections"] == conns)
                      - min(r["rps"] for r in runs if r["build"] == b and r["connections"] == conns)) / med[b]
                  for b in BUILDS}
        summary[conns] = {
            "median_rps": med, "spread": spread,
            "off_vs_removed": med["off"] / med["removed"] - 1,
            "on_vs_removed": med["on"] / med["removed"] - 1,
        }
    worst_off = min(s["off_vs_removed"] for s in summary.values())
    worst_on = min(s["on_vs_removed"] for s in summary.values())
    return {"seconds_per_run": seconds, "repeats": repeats, "runs": runs, "summary": summary,
            "tracepoints_removed": count_tracepoints_removed(),
            "off_within_3pct": worst_off >= -TARGET_OFF, "on_within_15pct": worst_on >= -TARGET_ON}


def render(report: dict) -> str:
    head = f"{'conns':>5} {'build':<8} {'median req/s':>12} {'spread':>7} {'vs removed':>10}"
    lines = [head, "-" * len(head)]
    for conns, s in report["summary"].items():
        for b in BUILDS:
            rel = "" if b == "removed" else f"{s['median_rps'][b] / s['median_rps']['removed'] - 1:+.1%}"
            lines.append(f"{conns:>5} {b:<8} {s['median_rps'][b]:>12.0f} {s['spread'][b]:>7.1%} {rel:>10}")
    lines.append("-" * len(head))
    lines.append(f"tracepoint tests compiled out in 'removed': {report['tracepoints_removed']}; "
                 f"{report['repeats']} x {report['seconds_per_run']} s per build")
    lines.append(f"off within 3%: {report['off_within_3pct']}   on within 15%: {report['on_within_15pct']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short run per build")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--serve", choices=BUILDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    report = run(quick=args.quick)
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
