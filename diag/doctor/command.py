"""``coroscope doctor``: start a service, load it, measure everything, rank what is wrong.

    coroscope doctor [--load http|echo|URL|CMD] [--duration S] [--loop L ...] [-o report.html] -- CMD
    coroscope doctor --demo        the shop service's planted problems, then the same service fixed
    coroscope doctor --pid PID [--load URL | --path P] [--duration S]    a running service

Prints the findings ranked by impact with their evidence, a side-by-side table when several
loops were asked for, and writes a self-contained HTML report (and its JSON with ``--json``).
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from diag.errors import CoroscopeError
from diag.model.base import write_json_atomic, write_text_atomic
from diag.model.doctor import DoctorReport

# The demo: the shop service (examples/shop_service.py) with its planted problems, then with
# the fixes applied, on the runtime; its requests weighted as a shop's are (orders most, a
# report now and then)
DEMO_SERVICE = ["{python}", "-m", "examples.shop_service", "--port", "0"]
DEMO_RUNS = [("planted", DEMO_SERVICE), ("fixed", [*DEMO_SERVICE, "--fixed"])]
DEMO_LOOP = "runtime"
DEMO_PATHS = ["/orders/7", "/orders/8", "/avatar/3", "/orders/9", "/orders/10", "/avatar/4",
              "/orders/11", "/orders/12", "/report"]


def configure(parser) -> None:
    parser.add_argument("--load", default="http",
                        help="http (GET / on the port the service prints), echo (64-byte TCP "
                             "echo), a URL, or a load command ({host} {port} {url} are filled in)")
    parser.add_argument("--pid", type=int, help="diagnose this running service from outside (what "
                        "needs a restart is named as not measured)")
    parser.add_argument("--path", action="append", metavar="PATH",
                        help="a path to GET (repeat for several; the load and the exact-syscalls "
                             "phase go round them), e.g. --path /items/7")
    parser.add_argument("--startup-timeout", type=float, default=30.0, metavar="S",
                        help="seconds the service may take to listen (default 30)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per run (default 5)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent connections (default 50)")
    parser.add_argument("--loop", action="append", choices=["runtime", "asyncio", "uvloop"],
                        help="run the service on this loop (repeat to compare loops side by side)")
    parser.add_argument("-o", "--output", help="the HTML report (default out/doctor-report.html)")
    parser.add_argument("--json", help="also write the report as JSON here")
    parser.add_argument("--demo", action="store_true",
                        help="diagnose the bundled example service on the runtime and on asyncio")
    parser.add_argument("command", nargs="*", help="the service to run (after --)")


def summary_lines(report: DoctorReport) -> list[str]:
    """The terminal summary: findings ranked by impact, then the runs side by side."""
    lines = [f"coroscope doctor: {report.target}", ""]
    if report.findings:
        lines.append(f"Findings, by impact ({len(report.findings)}):")
        for i, f in enumerate(report.findings, 1):
            lines.append(f"{i:>3}. [{f.severity.upper()}] {f.run}: {f.title}")
            for line in f.evidence[:4]:
                lines.append(f"       {line}")
            if f.advice:
                lines.append(f"       -> {f.advice}")
    else:
        lines.append("Findings: nothing wrong was found.")
    lines.append("")
    width = max(12, *(len(r.label) for r in report.runs))
    lines.append(f"{'':<24}" + "".join(f"{r.label:>{width + 2}}" for r in report.runs))

    def row(label, values):
        lines.append(f"{label:<24}" + "".join(f"{v:>{width + 2}}" for v in values))

    row("requests/s", [f"{r.latency.requests_per_s:,.0f}" if r.latency else "-" for r in report.runs])
    row("p50 / p99 ms", [f"{r.latency.p50_ms or 0:.2f} / {r.latency.p99_ms or 0:.2f}"
                         if r.latency else "-" for r in report.runs])
    row("syscalls per request", [f"{sum(r.syscalls_per_request.values()):g}"
                                 if r.syscalls_per_request else "n/a" for r in report.runs])
    row("fds leaked per cycle", [f"{r.leaked_fds_per_cycle:g}" if r.leaked_fds_per_cycle is not None
                                 else "n/a" for r in report.runs])
    row("tasks leaked per cycle", [f"{r.leaked_tasks_per_cycle:g}" if r.leaked_tasks_per_cycle is not None
                                   else "n/a" for r in report.runs])
    row("loop warnings", [str(len(r.warnings)) for r in report.runs])
    row("flame graphs", [", ".join(f.mode for f in r.flames if f.svg) or "none" for r in report.runs])
    for r in report.runs:
        for note in r.notes:
            if "not available" in note:
                lines.append(f"note: {r.label}: {note}")
    if report.html_path:
        lines.append("")
        lines.append(f"report: {report.html_path}")
    return lines


def service_name(command: list[str]) -> str:
    """What to call a run of a command with no loop asked for: the server (uvicorn, gunicorn),
    or for ``python [-m] X``, the module or script X."""
    first = Path(command[0]).name
    if not first.startswith("python"):
        return first
    rest = command[1:]
    for i, part in enumerate(rest):
        if part == "-m" and i + 1 < len(rest):
            return rest[i + 1]
        if not part.startswith("-"):
            return Path(part).name
    return first


def run_doctor(command: list[str], loops: list[str | None], duration: float, load: str,
               connections: int, output: str, json_path: str | None = None,
               progress=lambda line: None, paths: list[str] | None = None,
               variants: list[tuple[str, list[str]]] | None = None) -> DoctorReport:
    """Diagnose ``command`` on each of ``loops``; or, with ``variants`` ((label, command) each,
    on the first loop), each variant: the demo's planted service and its fixed twin."""
    from .diagnose import diagnose
    from .findings import find
    from .report_html import render
    from .target import expand_command, raise_nofile_limit

    raise_nofile_limit(2 * connections + 1024)  # the client and the service inherit it
    expanded = expand_command(command)
    plan = ([(f"{name} ({loops[0]})" if loops[0] else name, expand_command(cmd), loops[0])
             for name, cmd in variants] if variants else
            [(loop or service_name(expanded), expanded, loop) for loop in loops])
    runs = []
    for label, cmd, loop in plan:
        progress(f"diagnosing {label}" if variants else f"diagnosing on {loop or 'the program’s own loop'}")
        runs.append(diagnose(label, cmd, loop, duration, load, connections, progress, paths))
    report = DoctorReport(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        target=shlex.join([Path(expanded[0]).name, *expanded[1:]]), load=load,
        duration_s=duration, runs=runs, findings=find(runs), html_path=str(output))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, render(report))
    if json_path:
        write_json_atomic(json_path, report)
    return report


def run_doctor_pid(pid: int, duration: float, load: str, connections: int, output: str,
                   json_path: str | None, paths: list[str] | None, progress) -> DoctorReport:
    from .findings import find
    from .report_html import render
    from .running import diagnose_running
    run = diagnose_running(pid, duration, load, connections, paths, progress)
    report = DoctorReport(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        target=f"pid {pid}: {shlex.join(run.command)}" if run.command else f"pid {pid}", load=load,
        duration_s=duration, runs=[run], findings=find([run]), html_path=str(output))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, render(report))
    if json_path:
        write_json_atomic(json_path, report)
    return report


def main(args) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if args.pid is not None:
        if command or args.demo:
            raise CoroscopeError("give --pid PID, or a command after --, or --demo: one of them")
        if args.duration <= 0 or args.duration > 600:
            raise CoroscopeError("--duration must be between 0 and 600 seconds")
        report = run_doctor_pid(args.pid, args.duration, args.load, args.connections,
                                args.output or "out/doctor-report.html", args.json, args.path,
                                lambda line: print(f"... {line}", file=sys.stderr, flush=True))
        print("\n".join(summary_lines(report)))
        print("\nnot measured from outside:")
        for note in report.runs[0].notes:
            if "not measured" in note or "not available" in note:
                print(f"  {note}")
        return 0 if report.runs[0].complete else 1
    variants = None
    if args.demo:
        if command:
            raise CoroscopeError("--demo runs the bundled example service; give no command with it")
        command, loops, variants = list(DEMO_SERVICE), [(args.loop or [DEMO_LOOP])[0]], DEMO_RUNS
        args.path = args.path or DEMO_PATHS
        duration = args.duration if args.duration != 5.0 else 3.0
        output = args.output or "out/demo-report.html"
    else:
        if not command:
            raise CoroscopeError("no service to diagnose: coroscope doctor [options] -- CMD (or --demo)")
        loops, duration = list(args.loop or [None]), args.duration
        output = args.output or "out/doctor-report.html"
    if duration <= 0 or duration > 600:
        raise CoroscopeError("--duration must be between 0 and 600 seconds")
    for path in args.path or []:
        if not path.startswith("/"):
            raise CoroscopeError(f"--path {path}: give a path that starts with /, e.g. --path /items/7")
    from . import target as target_module
    target_module.STARTUP_TIMEOUT = args.startup_timeout
    report = run_doctor(command, loops, duration, args.load, args.connections, output, args.json,
                        progress=lambda line: print(f"... {line}", file=sys.stderr, flush=True),
                        paths=args.path, variants=variants)
    print("\n".join(summary_lines(report)))
    broken = [r for r in report.runs if not r.complete]
    if broken:
        why = next((n for n in broken[0].notes if n.startswith(("the run stopped early",
                                                                "the service exited"))),
                   "the run did not finish")
        print(f"coroscope: error: {broken[0].label}: {why}; the report has what was gathered",
              file=sys.stderr)
        return 1
    return 0
