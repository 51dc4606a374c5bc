"""``coroscope syscalls``: count a process's syscalls per request, per task or per thread.

    coroscope syscalls --pid PID [--duration S]
    coroscope syscalls [--by request|task|thread] [--json FILE] -- python app.py
    coroscope syscalls --compare asyncio,uvloop,runtime -- python server.py
    coroscope syscalls --print-bpf --pid PID
"""
from __future__ import annotations

import argparse
import sys

from ..errors import CoroscopeError
from ..model.base import to_jsonable, write_json_atomic
from .counts import REQUEST, TASK, THREAD


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pid", type=int, help="measure this running process")
    parser.add_argument("--worker", type=int, metavar="PID",
                        help="with --pid of a pre-fork master (gunicorn, uvicorn --workers, "
                             "hypercorn): this worker (default: the first that serves)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds to measure (default: 10 for --pid, until CMD exits otherwise)")
    parser.add_argument("--by", choices=(REQUEST, TASK, THREAD), default=REQUEST,
                        help="charge each syscall to the request, task or thread running it")
    parser.add_argument("--backend", choices=("auto", "bpf", "ptrace"), default="auto",
                        help="bpf (eBPF via bcc, root) or ptrace (strace); auto picks bpf when it can run")
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "runtime"), default=None,
                        help="with -- CMD: run the command on this event loop")
    parser.add_argument("--compare", metavar="LOOPS", default=None,
                        help="with -- CMD: run it on each of these loops (e.g. asyncio,uvloop,runtime), one table")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the report as JSON")
    parser.add_argument("--print-bpf", action="store_true", help="print the eBPF program and exit")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ...: start and measure this command")


def _command(args) -> list[str] | None:
    cmd = list(args.cmd or [])
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    return cmd or None


def _serving_pid(pid: int, worker: int | None) -> int:
    from .. import workers
    chosen, note = workers.one(pid, worker)
    if note:
        print(f"coroscope: {note}", file=sys.stderr)
    return chosen


def save_json(path: str, obj) -> None:
    try:
        write_json_atomic(path, obj)
    except OSError as exc:
        raise CoroscopeError(f"cannot write {path}: {exc.strerror}")


def main(args) -> int:
    cmd = _command(args)
    if args.print_bpf:
        from .bpf import BpfOptions, bpf_text

        print(bpf_text(BpfOptions(tgid=args.pid or 0, by=args.by)))
        return 0
    if args.pid is not None and cmd:
        raise CoroscopeError("give either --pid PID or -- CMD, not both")
    if args.pid is None and not cmd:
        raise CoroscopeError("nothing to measure: give --pid PID or -- CMD ...")

    from .collect import collect
    from .render import make_console, print_compare, print_report

    if args.pid is not None:
        args.pid = _serving_pid(args.pid, args.worker)

    console = make_console()
    if args.compare:
        if not cmd:
            raise CoroscopeError("--compare needs a command: --compare asyncio,uvloop,runtime -- CMD")
        from .compare import compare, parse_loops

        rows = compare(parse_loops(args.compare), cmd, collect=collect,
                       duration=args.duration, by=args.by, backend=args.backend)
        print_compare(rows, console)
        if args.json:
            save_json(args.json, {loop: (to_jsonable(r) if r else {"error": why}) for loop, r, why in rows})
        if all(r is None or r.total_calls == 0 for _, r, _ in rows):
            raise CoroscopeError("nothing was counted on any loop", exit_code=1)
        return 0

    report = collect(pid=args.pid, cmd=cmd, duration=args.duration, by=args.by,
                     backend=args.backend, loop=args.loop)
    print_report(report, console)
    if args.json:
        save_json(args.json, report)
    if report.total_calls == 0:
        raise CoroscopeError("nothing was counted: the target made no syscalls while measured", exit_code=1)
    sys.stdout.flush()
    return 0
