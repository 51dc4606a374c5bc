"""``coroscope bt PID [--gdb] | --core CORE --exe PYTHON [--json]``: every asyncio task and what it awaits.

A live pid is read from outside by ``reader`` (process_vm_readv: the target never stops); ``--gdb``
reads it through gdb instead (the target is stopped while gdb reads).  A core file always goes
through gdb.  Both give the same JSON.
"""
from __future__ import annotations

import sys

from diag.errors import CoroscopeError
from diag.model.tasks import tasks_json

from .gdbrun import collect
from .view import render


def configure(parser) -> None:
    parser.add_argument("pid", nargs="?", type=int, help="process to attach to (read only)")
    parser.add_argument("--worker", type=int, metavar="PID",
                        help="with the pid of a pre-fork master (gunicorn, uvicorn --workers, "
                             "hypercorn): this worker (default: the first that serves)")
    parser.add_argument("--core", help="a core file (from gcore or a crash)")
    parser.add_argument("--exe", help="the Python executable that wrote the core file")
    view = parser.add_mutually_exclusive_group()
    view.add_argument("--json", action="store_true", help="print the tasks as a JSON list")
    view.add_argument("--list", action="store_true", help="one line per task")
    view.add_argument("--group", action="store_true", help="tasks with identical stacks merged")
    view.add_argument("--tree", action="store_true", help="who awaits whom, with cycles")
    parser.add_argument("--gdb", action="store_true",
                        help="read a live pid through gdb (stops it while reading) instead of "
                             "from outside with process_vm_readv")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds gdb may take")


def read_live(pid: int):
    from diag.model.tasks import report_from_json

    from .reader import collect_document
    doc = collect_document(pid)
    if not doc["asyncio"]:
        print(f"coroscope: pid {pid} has not imported asyncio: 0 tasks", file=sys.stderr)
    if doc["torn"]:
        print(f"coroscope: {doc['torn']} task(s) changed on every re-read and are shown as torn",
              file=sys.stderr)
    return report_from_json(doc, f"pid {pid}")


def main(args) -> int:
    if (args.pid is None) == (args.core is None):
        raise CoroscopeError("give either a PID or --core CORE --exe PYTHON")
    if args.core is not None and not args.exe:
        raise CoroscopeError("--core needs --exe PYTHON (the interpreter that wrote the core)")
    if args.pid is not None:
        from diag import workers
        args.pid, note = workers.one(args.pid, args.worker)
        if note:
            print(f"coroscope: {note}", file=sys.stderr)
    if args.pid is not None and not args.gdb:
        report = read_live(args.pid)
    else:
        report = collect(pid=args.pid, core=args.core, exe=args.exe, timeout=args.timeout)
    if args.json:
        text = tasks_json(report.tasks)
    else:
        view = "list" if args.list else "group" if args.group else "tree" if args.tree else "bt"
        text = render(report, view)
    try:
        print(text)
    except BrokenPipeError:  # `coroscope bt PID | head`: the reader had enough
        sys.stdout = None
    return 0
