"""`coroscope top PID` and `coroscope top --replay FILE`."""
from __future__ import annotations

import argparse
import os

from diag.errors import CoroscopeError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pid", nargs="?", type=int, help="the traced process to watch")
    parser.add_argument("--worker", type=int, metavar="PID",
                        help="of a pre-fork service's master (gunicorn, uvicorn --workers), watch "
                             "this worker (default: the first; w moves to the next)")
    parser.add_argument("--replay", metavar="FILE", help="replay a recording instead of a process")
    parser.add_argument("--record", metavar="FILE",
                        help="record from the start (r starts and stops a recording)")
    parser.add_argument("--refresh", type=float, default=1.0, metavar="S",
                        help="seconds between refreshes (default 1)")
    parser.add_argument("--syscalls", action="store_true",
                        help="count syscalls per request with eBPF while watching (root, bcc; "
                             "costs the target a tracepoint per syscall)")
    parser.add_argument("--allow-truncated", action="store_true",
                        help="replay a truncated recording up to its last whole snapshot")


def make_source(args: argparse.Namespace):
    from diag.live.source import ReplaySource, attach_service
    if args.replay and args.pid is not None:
        raise CoroscopeError("give a pid or --replay FILE, not both")
    if args.replay:
        return ReplaySource(args.replay, allow_truncated=args.allow_truncated)
    if args.pid is None:
        raise CoroscopeError("give the pid of a traced process, or --replay FILE")
    return attach_service(args.pid, worker=args.worker, syscalls=args.syscalls)


def main(args: argparse.Namespace) -> int:
    if not 0.05 <= args.refresh <= 60:
        raise CoroscopeError(f"--refresh {args.refresh}: give between 0.05 and 60 seconds")
    if args.record:
        folder = os.path.dirname(os.path.abspath(args.record))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise CoroscopeError(f"cannot record to {args.record}: {folder} is not a writable folder")
    source = make_source(args)
    from .app import DashboardApp
    app = DashboardApp(source, refresh_s=args.refresh, record_path=args.record)
    app.run()
    return 0
