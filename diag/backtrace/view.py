"""Text views of a BacktraceReport, drawn by the same code the gdb commands use.

``gdb/coroscope_format.py`` works on plain dicts and needs no gdb; it is loaded here by path
(the gdb directory is not a package) so ``coroscope bt`` and ``coro bt`` print the same text.
"""
from __future__ import annotations

import importlib.util
import sys
from functools import cache

from diag.model.tasks import BacktraceReport, tasks_jsonable

from .gdbrun import GDB_DIR


@cache
def formatter():
    name = "coroscope_format"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GDB_DIR / "coroscope_format.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(report: BacktraceReport, view: str = "bt") -> str:
    fmt = formatter()
    tasks = tasks_jsonable(report.tasks)
    if view == "list":
        body = fmt.format_list(tasks)
    elif view == "group":
        body = fmt.format_groups(tasks)
    elif view == "tree":
        body = fmt.format_tree(tasks)
    else:
        names = fmt.names_of(tasks)
        body = "\n\n".join(fmt.format_bt(t, names) for t in tasks) or "no asyncio tasks"
    head = f"{report.target}: {len(report.tasks)} tasks ({report.layout})"
    tail = "".join(f"\n{e}" for e in report.errors)
    return f"{head}\n{body}{tail}"
