"""The report model of ``coroscope bt``: every asyncio task of a process and what it waits on.

Produced by the gdb scripts (``gdb/coroscope_tasks.py``, as JSON) and parsed here; every view
(the CLI text, ``--json``, other tools) renders these dataclasses.

``tasks_jsonable`` is ``diag.model.base.to_jsonable`` written out for these two classes, and
``tasks_json`` prints one task a line: on 10,000 tasks the generic walk over dataclass fields
and an indented dump (which Python's json does in pure Python; without indent it uses its C
encoder) took longer than reading the tasks out of the target.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Task states, as the gdb scripts name them.
STATES = ("pending", "running", "cancelling", "done", "cancelled", "unknown")

# What a task's innermost await waits on (``Awaiting["kind"]``).
AWAITING_KINDS = ("sleep", "fd", "lock", "event", "condition", "semaphore", "queue", "barrier",
                  "gather", "taskgroup", "task", "thread", "future", "running", "ready", "object",
                  "done", "unknown")


@dataclass
class TaskFrame:
    file: str
    line: int | None          # None when the location table has no line for the instruction
    function: str             # co_qualname
    kind: str                 # coroutine | generator | async_generator | running


@dataclass
class TaskRecord:
    id: int                   # the task's address: id(task) in the target
    name: str
    state: str                # one of STATES
    frames: list[TaskFrame]   # outermost first; empty for done tasks
    awaiting: dict[str, Any]  # always has "kind" (one of AWAITING_KINDS), plus its details
    loop: dict[str, Any] = field(default_factory=dict)   # id, address, class, thread (native tid)
    error: str | None = None  # "<unreadable at 0x...>" when part of the task could not be read
    request: int | None = None  # the id of the request it serves (runtime.requests.REQUEST_ID)

    @property
    def leaf(self) -> TaskFrame | None:
        return self.frames[-1] if self.frames else None


@dataclass
class BacktraceReport:
    target: str               # "pid 1234" or "core FILE"
    python: str               # "3.11"
    layout: str               # where the object offsets came from (DWARF or the version table)
    live: bool
    tasks: list[TaskRecord]
    cycles: list[list[int]]   # each [a, b, ..., a]
    errors: list[str] = field(default_factory=list)

    def by_name(self, name: str) -> TaskRecord:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)


def task_from_json(d: dict) -> TaskRecord:
    return TaskRecord(
        id=int(d["id"]), name=str(d.get("name", "")), state=str(d.get("state", "unknown")),
        frames=[TaskFrame(file=f.get("file", "?"), line=f.get("line"), function=f.get("function", "?"),
                          kind=f.get("kind", "")) for f in d.get("frames", [])],
        awaiting=dict(d.get("awaiting") or {"kind": "unknown"}),
        loop=dict(d.get("loop") or {}), error=d.get("error"), request=d.get("request"))


def report_from_json(doc: dict, target: str) -> BacktraceReport:
    return BacktraceReport(
        target=target, python=str(doc.get("python", "")), layout=str(doc.get("layout", "")),
        live=bool(doc.get("live")), tasks=[task_from_json(t) for t in doc.get("tasks", [])],
        cycles=[list(c) for c in doc.get("cycles", [])], errors=list(doc.get("errors", [])))


def _frame_jsonable(f: TaskFrame) -> dict:
    return {"file": f.file, "line": f.line, "function": f.function, "kind": f.kind}


def tasks_jsonable(tasks: list[TaskRecord]) -> list[dict]:
    """What ``to_jsonable(tasks)`` gives (the same keys, in field order), without its generic walk.
    ``awaiting`` and ``loop`` hold plain JSON values already (they came from JSON)."""
    return [{"id": t.id, "name": t.name, "state": t.state,
             "frames": [_frame_jsonable(f) for f in t.frames],
             "awaiting": t.awaiting, "loop": t.loop, "error": t.error, "request": t.request}
            for t in tasks]


def tasks_json(tasks: list[TaskRecord]) -> str:
    """The tasks as a JSON list, one task a line."""
    if not tasks:
        return "[]"
    dumps = json.JSONEncoder(ensure_ascii=True).encode
    return "[\n" + ",\n".join(dumps(t) for t in tasks_jsonable(tasks)) + "\n]"
