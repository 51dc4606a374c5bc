"""The ``coro`` gdb commands.  One class per command; its docstring is gdb's help text.

Each command takes a fresh look at the process (``snapshot()``): in an interactive session the
program may have run since the last command.  Nothing here resumes, writes or calls into the
inferior.
"""
from __future__ import annotations

import json
import re

import gdb

import coroscope_format as fmt
import coroscope_debug_offsets as debug_offsets
import coroscope_dwarf
import coroscope_layouts as layouts
from coroscope_memory import Memory, Unreadable
from coroscope_objects import Objects
from coroscope_tasks import NotPython, Process, reset_caches, symbol_address

JSON_BEGIN = "COROSCOPE-JSON-BEGIN"
JSON_END = "COROSCOPE-JSON-END"
FORCE_TABLE = {"on": False}  # `coro layout table` turns DWARF off (for checking the table)


def python_version(memory: Memory) -> tuple[int, int]:
    addr = symbol_address("Py_Version")
    if addr is None:
        # Before 3.11 there is no Py_Version; the interpreter's file name still says which it is.
        older = version_from_file_names()
        if older is not None:
            raise layouts.UnsupportedVersion(
                f"CPython {older[0]}.{older[1]} is not supported (supported: {layouts.supported_text()})")
        raise NotPython("no Py_Version symbol: not CPython 3.11+ (or its symbols are not loaded)")
    hexversion = memory.u64(addr) & 0xFFFFFFFF
    return (hexversion >> 24, (hexversion >> 16) & 0xFF)


def version_from_file_names() -> tuple[int, int] | None:
    """(3, 10) from a loaded libpython3.10.so or python3.10 executable, or None."""
    for objfile in gdb.objfiles():
        m = re.search(r"(?:^|/)(?:lib)?python(\d)\.(\d+)", objfile.filename or "")
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def snapshot() -> Process:
    try:
        inferior = gdb.selected_inferior()
    except gdb.error as exc:
        raise NotPython(str(exc)) from None
    if inferior.pid == 0 and not gdb.selected_inferior().threads():
        raise NotPython("no process or core file is loaded")
    runtime = symbol_address("_PyRuntime")
    if runtime is None:
        raise NotPython("not a Python process: no _PyRuntime symbol in the program or its libraries")
    memory = Memory(inferior)
    version = python_version(memory)
    layout = layouts.load(version, measure=None if FORCE_TABLE["on"] else coroscope_dwarf.offset)
    # 3.13+: what the interpreter publishes about itself must agree with what we will read by.
    layout.published = debug_offsets.check(memory.read, runtime, layouts.table_for(version), layout.off)
    reset_caches()
    proc = Process(Objects(memory, layout), runtime)
    proc.layout = layout
    return proc


def public(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def document(proc: Process) -> dict:
    tasks = [public(r) for r in proc.all_records()]
    return {
        "format": "coroscope-bt/1",
        "python": "%d.%d" % proc.layout.version,
        "layout": proc.layout.describe(),
        "runtime": f"{proc.runtime:#x}",
        "debug_offsets_agreeing": proc.layout.published,
        "live": proc.live,
        "threads": [{"ident": t["ident"], "native_id": t["native_id"]} for t in proc.threads],
        "tasks": tasks,
        "cycles": fmt.cycles(tasks),
        "errors": proc.errors,
        "memory_reads": proc.m.reads,
    }


def resolve(proc: Process, records: list[dict], key: str) -> dict:
    for rec in records:
        if key == rec["name"]:
            return rec
    try:
        wanted = int(key, 0)
    except ValueError:
        raise gdb.GdbError(f"no task named or numbered {key!r} (see coro list)") from None
    for rec in records:
        if rec["id"] == wanted:
            return rec
    raise gdb.GdbError(f"no task {key!r} (see coro list)")


def _run(body):
    try:
        body()
    except NotPython as exc:
        raise gdb.GdbError(f"coroscope: {exc}") from None
    except (layouts.UnsupportedVersion, debug_offsets.Mismatch) as exc:
        raise gdb.GdbError(f"coroscope: {exc}") from None
    except Unreadable as exc:
        raise gdb.GdbError(f"coroscope: cannot read the interpreter state: {exc}") from None


class CoroCommand(gdb.Command):
    """Inspect asyncio tasks (coroutines) of the program: coro list, coro bt, coro tree, coro locals.

Reads memory only: the program is not resumed, called into or changed."""

    def __init__(self):
        super().__init__("coro", gdb.COMMAND_STACK, gdb.COMPLETE_NONE, True)


class CoroList(gdb.Command):
    """List every asyncio task: id, name, state, thread, innermost location, what it awaits.

Usage: coro list [--group]
  --group   merge tasks with identical stacks, with counts (for thousands of tasks)."""

    def __init__(self):
        super().__init__("coro list", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        def body():
            tasks = [public(r) for r in snapshot().all_records()]
            text = fmt.format_groups(tasks) if "--group" in arg.split() else fmt.format_list(tasks)
            gdb.write(text + "\n")
        _run(body)


class CoroBt(gdb.Command):
    """Await chain of a task, outermost first, and what its innermost await waits on.

Usage: coro bt [ID | NAME | all]     (default: all)
ID is the task's address (id(task) in Python), in decimal or 0x hex."""

    def __init__(self):
        super().__init__("coro bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        def body():
            proc = snapshot()
            records = [public(r) for r in proc.all_records()]
            names = fmt.names_of(records)
            key = arg.strip()
            chosen = records if key in ("", "all") else [resolve(proc, records, key)]
            gdb.write("\n\n".join(fmt.format_bt(r, names) for r in chosen) + "\n")
            for err in proc.errors:
                gdb.write(err + "\n")
        _run(body)


class CoroTree(gdb.Command):
    """Who awaits whom: tasks as a tree (await, gather, TaskGroup), with cycles printed a -> b -> a.

Usage: coro tree"""

    def __init__(self):
        super().__init__("coro tree", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        _run(lambda: gdb.write(fmt.format_tree([public(r) for r in snapshot().all_records()]) + "\n"))


class CoroLocals(gdb.Command):
    """Local variables of one frame of a suspended task.

Usage: coro locals ID [FRAME]
FRAME is the number shown by coro bt (#0 is the outermost); default: the innermost."""

    def __init__(self):
        super().__init__("coro locals", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        def body():
            argv = gdb.string_to_argv(arg)
            if not argv:
                raise gdb.GdbError("usage: coro locals ID [FRAME]")
            proc = snapshot()
            rec = resolve(proc, proc.all_records(), argv[0])
            iframes = rec.get("_iframes") or []
            if not iframes:
                raise gdb.GdbError(f"task {argv[0]} has no suspended frame")
            index = int(argv[1]) if len(argv) > 1 else len(iframes) - 1
            if not 0 <= index < len(iframes):
                raise gdb.GdbError(f"frame {index} out of range 0..{len(iframes) - 1}")
            frame = rec["frames"][index]
            gdb.write(f"#{index} {frame['file']}:{frame['line']} in {frame['function']}\n")
            for name, value in proc.frame_locals(iframes[index]):
                gdb.write(f"  {name} = {proc.py.repr(value)}\n")
        _run(body)


class CoroJson(gdb.Command):
    """Every task as JSON (the form coroscope bt --json prints), between marker lines.

Usage: coro json"""

    def __init__(self):
        super().__init__("coro json", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        def body():
            doc = document(snapshot())
            gdb.write(JSON_BEGIN + "\n" + json.dumps(doc) + "\n" + JSON_END + "\n")
        _run(body)


class CoroLayout(gdb.Command):
    """Show where object offsets come from; `coro layout table` ignores debug info, `coro layout auto` uses it.

Usage: coro layout [table | auto]"""

    def __init__(self):
        super().__init__("coro layout", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        def body():
            if arg.strip() in ("table", "auto"):
                FORCE_TABLE["on"] = arg.strip() == "table"
            proc = snapshot()
            gdb.write(proc.layout.describe() + "\n")
            if proc.layout.published:
                gdb.write(f"  published _Py_DebugOffsets: {proc.layout.published} offsets agree\n")
            for type_name, source in sorted(proc.layout.sources.items()):
                gdb.write(f"  {type_name}: {source}\n")
        _run(body)


def register() -> None:
    CoroCommand()
    CoroList()
    CoroBt()
    CoroTree()
    CoroLocals()
    CoroJson()
    CoroLayout()
