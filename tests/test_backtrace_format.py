"""Pieces of coroscope bt that need no gdb: the line table reader, cycles, grouping, the model."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from diag.backtrace.view import formatter
from diag.model.base import to_jsonable
from diag.model.tasks import report_from_json

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "gdb"))
import coroscope_linetable  # noqa: E402

sys.path.remove(str(ROOT / "gdb"))


def all_code(code):
    yield code
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            yield from all_code(const)


@pytest.mark.parametrize("module", [asyncio.tasks, asyncio.base_events, json.decoder])
def test_linetable_matches_co_lines(module):
    source = Path(module.__file__).read_text()
    checked = 0
    for code in all_code(compile(source, module.__file__, "exec")):
        ours = coroscope_linetable.parse_linetable(code.co_linetable, code.co_firstlineno)
        # co_lines merges neighbouring ranges of one line; compare per code unit.
        expect = {off: line for start, end, line in code.co_lines() for off in range(start, end, 2)}
        got = {off: line for start, end, line in ours for off in range(start, end, 2)}
        assert got == expect, code.co_qualname
        checked += 1
    assert checked > 10


def task(i, name, awaiting, frames=(("a.py", 1, "f"),), state="pending"):
    return {"id": i, "name": name, "state": state, "awaiting": awaiting,
            "frames": [{"file": f, "line": l, "function": fn, "kind": "coroutine"} for f, l, fn in frames]}


def test_cycles_found_once_each():
    fmt = formatter()
    tasks = [task(1, "a", {"kind": "task", "task": 2}), task(2, "b", {"kind": "task", "task": 3}),
             task(3, "c", {"kind": "task", "task": 1}), task(4, "d", {"kind": "task", "task": 5}),
             task(5, "e", {"kind": "task", "task": 4}), task(6, "f", {"kind": "task", "task": 1}),
             task(7, "g", {"kind": "sleep", "deadline": 5.0})]
    assert fmt.cycles(tasks) == [[1, 2, 3, 1], [4, 5, 4]]
    tree = fmt.format_tree(tasks)
    assert "0x1 'a' -> 0x2 'b' -> 0x3 'c' -> 0x1 'a'" in tree
    assert "0x4 'd' -> 0x5 'e' -> 0x4 'd'" in tree
    assert tree.splitlines()[0].startswith("0x6 'f'")  # the only root awaiting into a cycle


def test_gather_children_are_tree_edges():
    fmt = formatter()
    tasks = [task(1, "parent", {"kind": "gather", "children": [{"id": 2, "task": True, "state": "pending"},
                                                              {"id": 9, "state": "pending"}]}),
             task(2, "child", {"kind": "event"})]
    assert fmt.edges(tasks) == {1: [2], 2: []}
    assert fmt.cycles(tasks) == []


def test_groups_merge_identical_stacks():
    fmt = formatter()
    same = (("w.py", 3, "worker"), ("x.py", 9, "wait"))
    tasks = [task(i, f"t{i}", {"kind": "event"}, same) for i in range(1, 6)]
    tasks.append(task(6, "other", {"kind": "event"}, (("w.py", 4, "worker"),)))
    groups = fmt.groups(tasks)
    assert [g["count"] for g in groups] == [5, 1]
    assert "6 tasks in 2 groups" in fmt.format_groups(tasks)


def test_report_model_round_trip():
    doc = {"python": "3.11", "layout": "x", "live": True, "cycles": [[1, 2, 1]],
           "tasks": [task(1, "a", {"kind": "task", "task": 2}), task(2, "b", {"kind": "task", "task": 1})]}
    report = report_from_json(doc, "pid 1")
    assert report.by_name("b").leaf.function == "f"
    again = to_jsonable(report.tasks)
    assert [t["awaiting"] for t in again] == [t["awaiting"] for t in doc["tasks"]]


def test_tasks_json_is_the_generic_json_of_the_model():
    from diag.model.tasks import tasks_json, tasks_jsonable
    doc = {"python": "3.11", "layout": "x", "live": True, "cycles": [],
           "tasks": [task(1, "a", {"kind": "sleep", "deadline": 1.5}, (("a.py", 3, "f"), ("b.py", None, "g"))),
                     task(2, "b\u00e9", {"kind": "task", "task": 1})]}
    report = report_from_json(doc, "pid 1")
    assert tasks_jsonable(report.tasks) == to_jsonable(report.tasks)
    text = tasks_json(report.tasks)
    assert json.loads(text) == to_jsonable(report.tasks)
    assert len(text.splitlines()) == 2 + len(report.tasks)     # one task a line
    assert tasks_json([]) == "[]"


def test_cli_rejects_bad_arguments():
    from diag.cli import main
    assert main(["bt"]) == 2
    assert main(["bt", "--core", "/nonexistent"]) == 2
    assert main(["bt", "--core", "/nonexistent", "--exe", sys.executable]) == 2
