"""Offsets measured from the interpreter's debug info, for ``coroscope_layouts.load`` (gdb only).

Kept apart from the layout layer so that the layer itself never imports ``gdb``: a reader
outside gdb loads the same tables and simply has no ``measure`` function to pass.
"""
from __future__ import annotations

import gdb


def offset(type_name: str, path: str | None) -> int | None:
    """The offset (or the size when path is None) measured from debug info, or None.

    ``path`` is dotted (``imports.modules``); ``data#count`` is the length of an array member.
    """
    try:
        t = gdb.lookup_type(type_name).strip_typedefs()
    except gdb.error:
        return None
    if path is None:
        return t.sizeof
    total = 0
    count = path.endswith("#count")
    if count:
        path = path[: -len("#count")]
    for part in path.split("."):
        fields = {f.name: f for f in t.fields()}
        if part not in fields:
            return None
        f = fields[part]
        total += f.bitpos // 8
        t = f.type.strip_typedefs()
    if count:
        return t.range()[1] + 1
    return total
