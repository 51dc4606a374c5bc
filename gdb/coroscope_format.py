"""Text for the task records: lists, backtraces, the await tree with its cycles.

Pure Python, no gdb: it works on the JSON-ready dicts that ``coroscope_tasks`` produces, so
the gdb commands and the ``coroscope bt`` CLI (which loads this file by path) print the same
text from the same data.
"""
from __future__ import annotations

import os


def short_path(path: str, width: int = 40) -> str:
    if len(path) <= width:
        return path
    parts = path.split(os.sep)
    tail = os.sep.join(parts[-2:])
    return "..." + os.sep + tail


def location(frame: dict | None) -> str:
    if not frame:
        return "-"
    return f"{short_path(frame.get('file') or '?')}:{frame.get('line')} {frame.get('function')}"


def task_label(task_id, names: dict) -> str:
    name = names.get(task_id)
    return f"{task_id:#x} {name!r}" if name is not None else f"{task_id:#x}"


def awaiting_text(aw: dict, names: dict | None = None) -> str:
    names = names or {}
    kind = aw.get("kind", "unknown")
    if kind == "sleep":
        text = f"sleep until loop time {aw.get('deadline'):.3f}" if aw.get("deadline") is not None else "sleep"
        if aw.get("remaining_s") is not None:
            text += f" (in {aw['remaining_s']:.1f} s)"
        return text
    if kind == "fd":
        via = " via StreamReader" if aw.get("via") == "StreamReader" else ""
        return f"fd {aw.get('fd')} {aw.get('mode', 'read')}{via}"
    if kind in ("lock", "event", "condition", "semaphore", "queue", "barrier"):
        bits = [f"{aw.get('waiters', '?')} waiters"]
        for key in ("locked", "is_set", "value", "qsize", "putters"):
            if key in aw:
                bits.append(f"{key}={aw[key]}")
        return f"{aw.get('primitive', kind)} {aw.get('object')} ({', '.join(bits)})"
    if kind in ("gather", "taskgroup"):
        kids = aw.get("children", [])
        shown = ", ".join(
            (task_label(c["id"], names) if c.get("task") else f"future {c['id']:#x}") + f" {c.get('state')}"
            for c in kids[:6])
        more = f", ... {len(kids) - 6} more" if len(kids) > 6 else ""
        return f"{kind} of {len(kids)}: {shown}{more}"
    if kind == "task":
        return f"task {task_label(aw['task'], names)} ({aw.get('task_state')})"
    if kind == "thread":
        who = f"thread {aw['thread']}" if aw.get("thread") else "a thread"
        fn = f" running {aw['function']}" if aw.get("function") else ""
        return f"future {aw.get('future')} completed by {who}{fn} (concurrent future {aw.get('concurrent_future')})"
    if kind == "future":
        held = aw.get("held_by") or []
        by = (" held by " + ", ".join(task_label(h, names) for h in held)) if held else ""
        return f"future {aw.get('future')} ({aw.get('future_type')}){by}"
    if kind == "running":
        return f"running on thread {aw.get('thread')}"
    if kind == "ready":
        return "ready to run (yielded to the loop)"
    if kind == "object":
        return f"awaits a {aw.get('type')} at {aw.get('future')}"
    if kind == "done":
        return "done"
    return kind


def names_of(tasks: list[dict]) -> dict:
    return {t["id"]: t.get("name") for t in tasks}


def format_list(tasks: list[dict]) -> str:
    names = names_of(tasks)
    lines = [f"{'ID':<16} {'NAME':<18} {'STATE':<10} {'THREAD':<8} {'LOCATION':<50} AWAITS"]
    for t in tasks:
        frames = t.get("frames") or []
        thread = (t.get("loop") or {}).get("thread")
        loc = location(frames[-1] if frames else None)
        aw = t.get("error") or awaiting_text(t.get("awaiting", {}), names)
        lines.append(f"{t['id']:#x}".ljust(16) + f" {str(t.get('name'))[:18]:<18} {t.get('state'):<10} "
                     f"{str(thread or '-'):<8} {loc[:50]:<50} {aw}")
    lines.append(f"{len(tasks)} tasks")
    return "\n".join(lines)


def group_key(t: dict) -> tuple:
    frames = tuple((f.get("file"), f.get("line"), f.get("function")) for f in t.get("frames") or [])
    return frames, t.get("state"), (t.get("awaiting") or {}).get("kind")


def groups(tasks: list[dict]) -> list[dict]:
    """Tasks with identical stacks (frames, state, leaf kind) merged, biggest group first."""
    merged: dict[tuple, dict] = {}
    for t in tasks:
        key = group_key(t)
        g = merged.setdefault(key, {"count": 0, "state": t.get("state"), "frames": t.get("frames") or [],
                                    "awaiting_kind": key[2], "ids": []})
        g["count"] += 1
        if len(g["ids"]) < 5:
            g["ids"].append(t["id"])
    return sorted(merged.values(), key=lambda g: -g["count"])


def format_groups(tasks: list[dict]) -> str:
    out = []
    for g in groups(tasks):
        out.append(f"{g['count']:>6} x  {g['state']}  awaiting {g['awaiting_kind']}  "
                   f"(e.g. {', '.join(f'{i:#x}' for i in g['ids'][:3])})")
        for f in g["frames"]:
            out.append(f"           {location(f)}")
    out.append(f"{len(tasks)} tasks in {len(groups(tasks))} groups")
    return "\n".join(out)


def format_bt(t: dict, names: dict) -> str:
    loop = t.get("loop") or {}
    head = (f"Task {t['id']:#x} {t.get('name')!r} {t.get('state')}"
            f"  loop {loop.get('class', '?')} {loop.get('address', '')}"
            f"  thread {loop.get('thread') or '-'}")
    if t.get("request"):
        head += f"  request {t['request']}"
    lines = [head]
    for i, f in enumerate(t.get("frames") or []):
        lines.append(f"  #{i} {f.get('file')}:{f.get('line')} in {f.get('function')} ({f.get('kind')})")
    if t.get("error"):
        lines.append(f"  {t['error']}")
    lines.append(f"  -> {awaiting_text(t.get('awaiting', {}), names)}")
    return "\n".join(lines)


def edges(tasks: list[dict]) -> dict:
    """task id -> ids of the tasks it waits for (await, gather children, TaskGroup children)."""
    ids = {t["id"] for t in tasks}
    out = {}
    for t in tasks:
        aw = t.get("awaiting") or {}
        targets = []
        if aw.get("kind") == "task":
            targets.append(aw["task"])
        elif aw.get("kind") in ("gather", "taskgroup"):
            targets.extend(c["id"] for c in aw.get("children", []) if c.get("task"))
        out[t["id"]] = [x for x in targets if x in ids]
    return out


def cycles(tasks: list[dict]) -> list[list[int]]:
    """Each cycle once, as [a, b, ..., a], starting from its smallest id."""
    graph = edges(tasks)
    found, seen_keys = [], set()
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, []):
                if nxt == start:
                    cycle = path + [start]
                    key = frozenset(path)
                    if key not in seen_keys and min(path) == start:
                        seen_keys.add(key)
                        found.append(cycle)
                elif nxt not in path and nxt > start and len(path) < 64:
                    stack.append((nxt, path + [nxt]))
    return found


def format_tree(tasks: list[dict]) -> str:
    names = names_of(tasks)
    graph = edges(tasks)
    awaited = {c for targets in graph.values() for c in targets}
    roots = [t["id"] for t in tasks if t["id"] not in awaited]
    by_id = {t["id"]: t for t in tasks}
    lines: list[str] = []

    def show(node, depth, path):
        t = by_id[node]
        aw = t.get("awaiting") or {}
        tail = "" if graph.get(node) else f"  -> {awaiting_text(aw, names)}"
        lines.append("  " * depth + f"{task_label(node, names)} [{t.get('state')}]{tail}")
        for child in graph.get(node, []):
            if child in path:
                lines.append("  " * (depth + 1) + f"{task_label(child, names)} (cycle)")
            elif depth < 64:
                show(child, depth + 1, path | {child})

    for r in roots:
        show(r, 0, {r})
    found = cycles(tasks)
    for c in found:
        if not any(n in roots for n in c):
            show(c[0], 0, {c[0]})
    if found:
        lines.append("cycles:")
        for c in found:
            lines.append("  " + " -> ".join(task_label(n, names) for n in c))
    return "\n".join(lines)
