"""Where ``_PyRuntime`` and ``Py_Version`` are in a running process, without gdb.

Both are exported (CPython marks them PyAPI_DATA), so they are in the dynamic symbol table of
the python executable or of libpython, which even a stripped interpreter keeps.  The file comes
from /proc/PID/maps (through /proc/PID/root, so a process in a container is read from its own
files); its load bias is the address of its first mapping minus the virtual address of its
first PT_LOAD segment (zero for a non-PIE executable).  The parser reads only the ELF header,
the section headers and ``.dynsym``/``.dynstr``: the few hundred lines of pyelftools that this
needs are smaller than the dependency.
"""
from __future__ import annotations

import os
import struct

WANTED = ("_PyRuntime", "Py_Version")
MAX_DYNSYM = 64 << 20  # bytes of .dynsym + .dynstr read at most


class Mapping:
    def __init__(self, start: int, end: int, perms: str, offset: int, path: str):
        self.start, self.end, self.perms, self.offset, self.path = start, end, perms, offset, path


def mappings(pid: int) -> list[Mapping]:
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) < 6:
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            out.append(Mapping(start, end, parts[1], int(parts[2], 16), parts[5].strip()))
    return out


def dynamic_symbols(path: str, names=WANTED) -> dict[str, int]:
    """name -> st_value for the wanted names defined in the file's .dynsym (ELF64 LE only)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return {}
        shoff, = struct.unpack_from("<Q", head, 40)
        shentsize, shnum = struct.unpack_from("<HH", head, 58)
        if not shoff or shnum > 4096 or shentsize < 64:
            return {}
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]
        out: dict[str, int] = {}
        for _name, sh_type, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
            if sh_type != 11 or entsize != 24 or link >= len(sections):  # SHT_DYNSYM
                continue
            str_off, str_size = sections[link][4], sections[link][5]
            if size + str_size > MAX_DYNSYM:
                return {}
            f.seek(offset)
            syms = f.read(size)
            f.seek(str_off)
            strings = f.read(str_size)
            wanted = {n.encode() for n in names}
            for i in range(0, len(syms) - 23, 24):
                st_name, _st_info, _other, shndx, value, _size = struct.unpack_from("<IBBHQQ", syms, i)
                if not shndx or not value:
                    continue  # undefined here (imported from another object)
                end = strings.find(b"\0", st_name)
                name = strings[st_name:end]
                if name in wanted:
                    out[name.decode()] = value
        return out


def first_load_vaddr(path: str) -> int:
    with open(path, "rb") as f:
        head = f.read(64)
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * min(phnum, 256))
    for i in range(min(phnum, 256)):
        p_type, _flags, p_offset, p_vaddr = struct.unpack_from("<IIQQ", table, i * phentsize)
        if p_type == 1:  # PT_LOAD
            return p_vaddr - p_offset
    return 0


def find(pid: int) -> dict[str, int]:
    """Runtime addresses of ``_PyRuntime`` and ``Py_Version`` (those found), from pid's maps."""
    maps = mappings(pid)
    firsts: dict[str, Mapping] = {}
    for m in maps:
        if m.path.startswith("/") and m.path not in firsts:
            firsts[m.path] = m
    # The executable first, then libpython: a --enable-shared build has them in the library.
    exe = os.readlink(f"/proc/{pid}/exe") if os.path.exists(f"/proc/{pid}/exe") else ""
    order = sorted(firsts, key=lambda p: (p != exe, "libpython" not in os.path.basename(p)))
    found: dict[str, int] = {}
    for path in order:
        base = os.path.basename(path)
        if path != exe and "python" not in base:
            continue
        on_disk = f"/proc/{pid}/root{path}"
        try:
            syms = dynamic_symbols(on_disk)
            if not syms:
                continue
            m = firsts[path]
            bias = m.start - m.offset - first_load_vaddr(on_disk)
        except (OSError, struct.error):
            continue
        for name, value in syms.items():
            found.setdefault(name, value + bias)
        if all(n in found for n in WANTED):
            break
    return found
