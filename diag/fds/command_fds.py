"""``coroscope fds``: the live fd inventory of a process, with the stack that opened each fd.

    coroscope fds [--pid PID] [--json] [--stacks] [--kind KIND]...

Opening stacks come from the target's probe file (its fd-origin table, written when the
target runs with tracing on: ``coroscope run``, or COROSCOPE_TRACE=1 + COROSCOPE_FDTRACK=1);
reading it makes no syscall in the target. Without a probe file the inventory has no stacks
and says so. Without --pid, the inventory is of the coroscope process itself (with fdtrack's
stacks when it is installed), which is mostly useful to try the command.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from diag.errors import CoroscopeError
from diag.model.base import to_jsonable

from . import fdtrack
from .inventory import attach_origins, scan
from .probe_origins import probe_origins


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pid", type=int, default=None, help="process to inspect (default: this one)")
    parser.add_argument("--json", action="store_true", help="print the inventory as JSON")
    parser.add_argument("--stacks", action="store_true", help="print the whole opening stack under each fd")
    parser.add_argument("--kind", action="append", default=[], help="only fds of this kind (repeatable)")


def inventory_with_origins(pid: int | None):
    inv = scan(pid)
    if pid is None or pid == os.getpid():
        if fdtrack.installed():
            fdtrack.attach(inv)
        return inv
    origins, notice = probe_origins(pid, [row.fd for row in inv.rows])
    if origins:
        attach_origins(inv, origins, "probe")
    if notice:
        inv.notices.append(notice)
    return inv


def main(args: argparse.Namespace) -> int:
    if args.pid is not None and args.pid <= 0:
        raise CoroscopeError(f"not a process id: {args.pid}")
    inv = inventory_with_origins(args.pid)
    if args.kind:
        wanted = set(args.kind)
        inv.rows = [r for r in inv.rows if r.kind in wanted or ("socket" in wanted and r.kind in
                                                                ("tcp", "tcp6", "udp", "udp6", "unix", "socket"))]
    if args.json:
        print(json.dumps(to_jsonable(inv) | {"counts": inv.counts_by_kind()}, indent=2))
    else:
        from .render import render_inventory
        sys.stdout.write(render_inventory(inv, stacks=args.stacks))
    if not inv.complete:
        for notice in inv.notices:
            print(f"coroscope: {notice}", file=sys.stderr)
        return 1
    return 0
