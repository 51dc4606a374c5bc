"""Where a service's tasks wait: the await site in the service's own code, and what it awaits.

An await profile's leaves are what a chain ends on (``[future]``, ``[task: x]``), and the
frames just above them are asyncio's own (``sock_recv``, ``Lock.acquire``, ``readuntil``). Neither
is something a user can change. What they can change is the line of *their* code that awaits:
the deepest frame of the chain that is not the standard library's or an installed package's.
So each chain is cut there, and named by that frame, the source line it stands on (read here,
from the file on this machine, never from the target), and the frames below it.

One more thing the chain tells: whether a frame of the service's own above the site is inside
a loop over items (a ``for`` or a comprehension; a ``while`` is a server's read loop) of its function, as the source says. An await
on a slow dependency inside a loop is the N+1 pattern: one round trip per item, in sequence.
"""
from __future__ import annotations

import ast
import functools
import linecache
import re
import sysconfig

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_LIBRARY_DIRS = tuple({p for key in ("stdlib", "platstdlib", "purelib", "platlib")
                       if (p := sysconfig.get_paths().get(key))})


def _parse(frame: str) -> tuple[str, str, int] | None:
    match = _FRAME.match(frame)
    if not match:
        return None
    return match["name"], match["file"], int(match["line"] or 0)


def is_library(path: str) -> bool:
    """A file of the standard library or of an installed package (not the service's own)."""
    return (path.startswith(_LIBRARY_DIRS) or "/site-packages/" in path
            or "/lib/python3" in path or path.startswith("<"))


# loops over items; a `while` is a server's own read loop (wait for the next request), not N+1
_LOOPS = (ast.For, ast.AsyncFor, ast.ListComp, ast.SetComp, ast.DictComp,
          ast.GeneratorExp)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


@functools.lru_cache(maxsize=64)
def _tree(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return None


def loop_around(path: str, line: int) -> int | None:
    """The line of the innermost loop of its own function that ``line`` of ``path`` is in."""
    tree = _tree(path)
    if tree is None or not line:
        return None
    found = None

    def visit(node, in_function_loop):
        nonlocal found
        for child in ast.iter_child_nodes(node):
            start, end = getattr(child, "lineno", None), getattr(child, "end_lineno", None)
            if start is None or not start <= line <= end:
                if start is None:
                    visit(child, in_function_loop)
                continue
            if isinstance(child, _FUNCTIONS):
                found = None                      # a loop outside this function does not count
                visit(child, None)
            elif isinstance(child, _LOOPS):
                found = child.lineno
                visit(child, child.lineno)
            else:
                visit(child, in_function_loop)

    visit(tree, None)
    return found


def looped_at(frames: list[str]) -> str:
    """``file:line `source``` of the loop a service frame of this chain awaits in, or ""."""
    for frame in reversed(frames):
        parsed = _parse(frame)
        if parsed is None or is_library(parsed[1]):
            continue
        _name, path, line = parsed
        if _name in ("<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"):
            loop_line = line
        else:
            loop_line = loop_around(path, line)
        if loop_line:
            short = "/".join(path.split("/")[-2:])
            return f"{short}:{loop_line} `{linecache.getline(path, loop_line).strip()}`"
    return ""


def await_site(frames: list[str]) -> tuple[str, str] | None:
    """(the service's deepest awaiting frame, what it waits on) for one await chain, root first.

    None when the chain has no frame of the service's own (an idle server's accept loop).
    """
    for depth in range(len(frames) - 1, -1, -1):
        parsed = _parse(frames[depth])
        if parsed is None or is_library(parsed[1]):
            continue
        name, path, line = parsed
        source = linecache.getline(path, line).strip() if line else ""
        below = [(_parse(f) or (f, "", 0))[0] for f in frames[depth + 1:]]
        waits = f"`{source}`" if source else "?"
        if below:
            waits += " -> " + " -> ".join(below)
        short = "/".join(path.split("/")[-2:])
        return f"{name} ({short}:{line})", waits
    return None


def await_sites(stacks, limit: int = 5) -> list[tuple[str, str, float, str]]:
    """The await sites holding most of the waiting: (site, what it waits on, share 0..1, the
    loop it is awaited in or "").

    ``stacks`` are (frames root first, weight) pairs of an await profile; the share is of all
    task waiting sampled, idle library waits included, so shares say how much of it is the
    service's own.
    """
    total = sum(w for _f, w in stacks)
    sites: dict[tuple[str, str, str], float] = {}
    for frames, weight in stacks:
        if frames and frames[-1] in ("[running]", "[ready]"):
            continue
        found = await_site(list(frames))
        if found is not None:
            key = (*found, looped_at(list(frames)))
            sites[key] = sites.get(key, 0.0) + weight
    ranked = sorted(sites.items(), key=lambda kv: -kv[1])[:limit]
    return [(site, waits, w / total, loop) for (site, waits, loop), w in ranked] if total else []
