"""The offsets CPython 3.13+ publishes about itself, read and held against our table.

From 3.13 the interpreter opens ``_PyRuntime`` with ``_Py_DebugOffsets`` (pycore_runtime.h): the
cookie ``xdebugpy``, the version, and then, section after section, the offsets of the members an
out-of-process reader needs (thread and interpreter state, frames, code objects, the basic
objects).  It is how pystack and austin read 3.13 without debug info.  It covers neither tasks
nor generators, so it cannot replace a table; what it can do is catch a table that is wrong for
the interpreter at hand (a vendor build with a patched struct, a free-threaded build).  So the
reader checks: every published offset that names a member we use must equal ours, and any
disagreement stops the reading with one line saying which, never output from a wrong offset.

The layout of ``_Py_DebugOffsets`` itself is version-specific, so it lives in the version's
table (``DEBUG_OFFSETS_FIELDS``: every uint64 after cookie, in order; ``DEBUG_OFFSETS_CHECKS``:
published name -> our logical name).  Plain Python, no gdb: a reader of its own passes the bytes.
"""
from __future__ import annotations

import struct

COOKIE = b"xdebugpy"


class Mismatch(Exception):
    """The published offsets disagree with the layout (or are not there)."""


def size(table) -> int:
    return len(COOKIE) + 8 * len(table.DEBUG_OFFSETS_FIELDS)


def parse(raw: bytes, table) -> dict:
    """``{"version": ..., "interpreter_frame.previous": ...}`` from the first bytes of _PyRuntime."""
    names = table.DEBUG_OFFSETS_FIELDS
    if raw[:len(COOKIE)] != COOKIE:
        raise Mismatch(f"_PyRuntime does not open with the {COOKIE.decode()} cookie of _Py_DebugOffsets")
    values = struct.unpack_from(f"<{len(names)}Q", raw, len(COOKIE))
    return dict(zip(names, values))


def compare(published: dict, table, offsets: dict) -> list[str]:
    """Each disagreement as ``name: ours N, published M``; empty when all agree."""
    out = []
    major, minor = table.VERSION
    hexversion = published["version"]
    if (hexversion >> 24, (hexversion >> 16) & 0xFF) != (major, minor):
        out.append(f"version: ours {major}.{minor}, published {hexversion >> 24}.{(hexversion >> 16) & 0xFF}")
    if published.get("free_threaded"):
        out.append("free_threaded: ours 0 (a build with the GIL), published 1")
    for name, logical in table.DEBUG_OFFSETS_CHECKS.items():
        if offsets[logical] != published[name]:
            out.append(f"{logical}: ours {offsets[logical]}, published {published[name]} ({name})")
    return out


def check(read, runtime: int, table, offsets: dict) -> int:
    """Read and compare; returns how many offsets agree, raises ``Mismatch`` with one line if any do not.

    ``read(address, size) -> bytes``; a table without ``DEBUG_OFFSETS_FIELDS`` (3.11, 3.12) has
    nothing published to check and returns 0.
    """
    if not getattr(table, "DEBUG_OFFSETS_FIELDS", None):
        return 0
    wrong = compare(parse(read(runtime, size(table)), table), table, offsets)
    if wrong:
        raise Mismatch("CPython %d.%d: the interpreter's _Py_DebugOffsets disagree with the layout: %s"
                       % (table.VERSION[0], table.VERSION[1], "; ".join(wrong)))
    return len(table.DEBUG_OFFSETS_CHECKS)
