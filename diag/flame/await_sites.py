"""Where tasks wait, in the user's code: the await sites of an await-mode profile.

An await profile's stacks end in a leaf that says what the chain waits on ("[future]", a task,
a sleep), under frames of asyncio, of libraries and of the user's code. "Tasks spend most of
their waiting in [future]" is true and useless: every wait ends on a future. What a user can
act on is the line of *their* code that awaits, and what it awaits below it. So each stack is
read from the leaf up to its innermost frame of user code (not the standard library, not an
installed package, not coroscope itself): that frame is the await site, the frames below it
and the leaf are what it waits on ("sock_recv -> [future]").

One more thing is in the source: an await inside a ``for`` of some frame of the chain is
awaited once per iteration, one after another: the N+1 pattern (a query per line of
an order), which ``asyncio.gather`` or one batched query fixes. The chain's frames carry their
line numbers, so the enclosing loop is found by parsing that function's file (``ast``, read
once per file, bounded in size).

States that are not waits ("[not started]", "[ready]", "[running]") are left out, and so are
waits with no user frame at all (a keep-alive connection idling in the server's own code);
their share is reported apart as ``idle_share``.
"""
from __future__ import annotations

import ast
import functools
import os
import re
import sysconfig

from diag.model.flame import AwaitSite

NOT_WAITS = ("[not started]", "[ready]", "[running]")
MAX_SOURCE_BYTES = 2_000_000
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*):(?P<line>\d+)\)$")
_OURS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), d)
              + os.sep for d in ("runtime", "diag", "dashboards"))
_LIBRARY = tuple(p + os.sep for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib",
                                                                        "purelib", "platlib")})


def parse_frame(label: str) -> tuple[str, str, int] | None:
    m = _FRAME.match(label)
    if not m:
        return None
    return m["func"], m["file"], int(m["line"])


def is_user_code(path: str) -> bool:
    path = os.path.abspath(path)
    return not (path.startswith(_OURS) or path.startswith(_LIBRARY) or "site-packages" in path
                or path.startswith("<"))


def short(label: str) -> str:
    """``f (/long/path/pkg/mod.py:12)`` -> ``f (pkg/mod.py:12)``."""
    parsed = parse_frame(label)
    if parsed is None:
        return label
    func, path, line = parsed
    return f"{func} ({'/'.join(path.split('/')[-2:])}:{line})"


@functools.lru_cache(maxsize=64)
def _loop_lines(path: str) -> tuple[tuple[int, int], ...]:
    """(first, last) line of the body of every ``for`` loop in a file."""
    try:
        if os.path.getsize(path) > MAX_SOURCE_BYTES:
            return ()
        with open(path, encoding="utf-8", errors="replace") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return ()
    spans = []
    for node in ast.walk(tree):
        # a for over items is the N+1 shape; while (a protocol's read loop) and async for (a
        # stream) await one item after another by nature, and are left out
        if isinstance(node, ast.For) and node.body:
            spans.append((node.body[0].lineno, max(getattr(n, "end_lineno", n.lineno) or n.lineno
                                                   for n in node.body)))
    return tuple(spans)


def in_a_loop(path: str, line: int) -> bool:
    return any(first <= line <= last for first, last in _loop_lines(path))


def await_sites(stacks, limit: int = 5) -> tuple[list[AwaitSite], float]:
    """The await sites of ``stacks`` (StackCount-like: ``frames`` root first, ``weight``), most
    waited first, each with its share of the waiting in user code; and the share of all the
    waiting that has no user frame (idle in libraries)."""
    by_site: dict[tuple[str, str, str | None], float] = {}
    total = idle = 0.0
    for stack in stacks:
        frames = list(stack.frames)
        if not frames or frames[-1] in NOT_WAITS:
            continue
        total += stack.weight
        user = [i for i, f in enumerate(frames) if (p := parse_frame(f)) and is_user_code(p[1])]
        if not user:
            idle += stack.weight
            continue
        site_i = user[-1]
        below = [parse_frame(f)[0] if parse_frame(f) else f for f in frames[site_i + 1:]]
        loop_at = next((short(frames[i]) for i in user
                        if in_a_loop(parse_frame(frames[i])[1], parse_frame(frames[i])[2])), None)
        key = (short(frames[site_i]), " -> ".join(below) or "?", loop_at)
        by_site[key] = by_site.get(key, 0.0) + stack.weight
    mine = total - idle
    if not mine:
        return [], (idle / total if total else 0.0)
    ranked = sorted(by_site.items(), key=lambda kv: -kv[1])[:limit]
    return [AwaitSite(site, waits, w / mine, loop_at) for (site, waits, loop_at), w in ranked], idle / total


def loop_thread_sites(stacks, loop_frame: str = "[event loop]", limit: int = 3,
                      at_least: float = 0.05) -> list[tuple[str, str, float]]:
    """Where the event loop's thread spends its wall time running the user's code, from a wall
    profile whose loop frames are folded into ``loop_frame``: (innermost user frame, the call
    it is in, share of the loop thread's samples). A stack ending in the loop frame is the
    loop polling; other threads' stacks (an executor's) have no loop frame and are left out,
    so a blocking call moved to an executor is not named here."""
    by_site: dict[tuple[str, str], float] = {}
    total = 0.0
    for stack in stacks:
        frames = list(stack.frames)
        if loop_frame not in frames:
            continue
        total += stack.weight
        after = frames[frames.index(loop_frame) + 1:]
        user = [i for i, f in enumerate(after) if (p := parse_frame(f)) and is_user_code(p[1])]
        if not user:
            continue
        leaf = parse_frame(after[-1])
        key = (short(after[user[-1]]), leaf[0] if leaf else after[-1])
        by_site[key] = by_site.get(key, 0.0) + stack.weight
    if not total:
        return []
    ranked = sorted(by_site.items(), key=lambda kv: -kv[1])
    return [(site, leaf, w / total) for (site, leaf), w in ranked[:limit] if w / total >= at_least]
