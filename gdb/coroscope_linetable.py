"""CPython location tables (``co_linetable``) to line numbers; pure Python, no gdb.

One format serves 3.11, 3.12 and 3.13 (Objects/locations.md is unchanged across them).  The
offset asked about is CPython's LASTI in bytes: ``prev_instr - code`` in 3.11 and 3.12, and
``instr_ptr - code`` in 3.13, where the pointer is the current instruction rather than the last;
the reader takes that pointer from the frame, so this module does not care which it was.

The format is described in CPython's Objects/locations.md: a sequence of entries, each
covering 1-8 code units, whose first byte holds a code (bits 3-6) and the length (bits 0-2);
the line is a running value, changed by a signed delta in most entry kinds.  Kept apart from
the gdb walkers so a test can check it against ``code.co_lines()`` of real code objects.
"""
from __future__ import annotations


def parse_linetable(table: bytes, firstlineno: int) -> list[tuple[int, int, int | None]]:
    """Location table -> [(start_offset_bytes, end_offset_bytes, line)] (Objects/locations.md)."""
    out = []
    i, addr, line = 0, 0, firstlineno
    n = len(table)

    def varint():
        nonlocal i
        shift = value = 0
        while i < n:
            b = table[i]
            i += 1
            value |= (b & 63) << shift
            shift += 6
            if not b & 64:
                break
        return value

    def svarint():
        v = varint()
        return -(v >> 1) if v & 1 else v >> 1

    while i < n:
        first = table[i]
        i += 1
        code = (first >> 3) & 15
        length = (first & 7) + 1
        if code == 15:
            entry_line = None
        elif code == 14:
            line += svarint()
            varint(); varint(); varint()
            entry_line = line
        elif code == 13:
            line += svarint()
            entry_line = line
        elif code >= 10:
            line += code - 10
            i += 2
            entry_line = line
        else:
            i += 1
            entry_line = line
        out.append((addr, addr + 2 * length, entry_line))
        addr += 2 * length
    return out
