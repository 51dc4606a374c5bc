"""Bounded, read-only access to the inferior's memory, cached by page.

The target is stopped (attached with ptrace) or is a core file, so memory does not change
while we look: a page read once can be reused.  Walking 10,000 tasks touches the same pages
(code objects, types, the task heap) again and again, and one 4 KiB read costs about what an
8-byte read costs, so caching whole pages is what makes the walk fast.

Nothing here writes memory, calls into the inferior or touches registers.  Every read is
bounded (``MAX_READ``); a read that fails raises ``Unreadable`` with the address, which the
walkers turn into ``<unreadable at 0x...>`` for the one object and carry on.
"""
from __future__ import annotations

import struct
import sys

# gdb's own module is there (in sys.modules) only inside gdb; outside it (loaded by coroscope's own memory reader),
# an ``import gdb`` would find this very directory as a namespace package, so it is not imported
gdb = sys.modules.get("gdb")
if not hasattr(gdb, "lookup_type"):
    gdb = None

PAGE = 4096
MAX_READ = 1 << 20          # no single object read is larger than this
MAX_CACHED_PAGES = 1 << 15  # 128 MiB of cache at most, then start again

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_F64 = struct.Struct("<d")
_U8 = struct.Struct("<B")
_I8 = struct.Struct("<b")


class Unreadable(Exception):
    """Memory at ``address`` could not be read (or a value there makes no sense)."""

    def __init__(self, address: int, why: str = ""):
        super().__init__(address)
        self.address = address
        self.why = why

    def __str__(self) -> str:
        return f"<unreadable at {self.address:#x}>"


class Memory:
    """The page cache and the bounded helpers, over one hook: ``read_raw``.

    A reader of another source (coroscope's process_vm_readv reader) subclasses this and
    replaces ``read_raw`` only, so there is one page cache whatever the memory comes from.
    """

    def __init__(self, inferior=None):
        self.inferior = inferior if inferior is not None or gdb is None else gdb.selected_inferior()
        self.pages: dict[int, bytes] = {}
        self.bad_pages: set[int] = set()
        self.reads = 0  # reads of the source made (for the benchmark)

    def read_raw(self, address: int, size: int) -> bytes | None:
        """``size`` bytes at ``address`` from the source, or None where it cannot be read."""
        try:
            return bytes(self.inferior.read_memory(address, size))
        except (gdb.MemoryError, gdb.error, OverflowError, ValueError):
            return None

    def _page(self, base: int) -> bytes | None:
        page = self.pages.get(base)
        if page is not None:
            return page
        if base in self.bad_pages:
            return None
        if len(self.pages) >= MAX_CACHED_PAGES:
            self.pages.clear()
        self.reads += 1
        page = self.read_raw(base, PAGE)
        if page is None:
            self.bad_pages.add(base)
            return None
        self.pages[base] = page
        return page

    def read(self, address: int, size: int) -> bytes:
        start = address & (PAGE - 1)
        if 0 <= size and start + size <= PAGE and address > 0:
            page = self.pages.get(address - start)       # the hot path: a cached page
            if page is not None:
                return page[start:start + size]
        if address <= 0 or size < 0 or size > MAX_READ or address + size >= 1 << 64:
            raise Unreadable(address, "bad address or size")
        base = address - start
        if start + size <= PAGE:
            page = self._page(base)
            if page is None:
                return self._direct(address, size)
            return page[start:start + size]
        chunks = []
        end = address + size
        while base < end:
            page = self._page(base)
            if page is None:
                return self._direct(address, size)
            chunks.append(page)
            base += PAGE
        return b"".join(chunks)[start:start + size]

    def _direct(self, address: int, size: int) -> bytes:
        # A page that could not be read whole may still be readable in part (a core file
        # segment that ends inside a page, a mapping that ends inside a page).
        self.reads += 1
        data = self.read_raw(address, size)
        if data is None:
            raise Unreadable(address)
        return data

    def _cached(self, address: int, size: int, fmt: struct.Struct):
        # Fixed-size scalars are most of all reads: the cache's lookup inlined, one call each.
        start = address & (PAGE - 1)
        if start <= PAGE - size and address > 0:
            page = self.pages.get(address - start)
            if page is not None:
                return fmt.unpack_from(page, start)[0]
        return fmt.unpack(self.read(address, size))[0]

    def u64(self, address: int) -> int:  # a third of all reads are pointers: inlined again
        start = address & (PAGE - 1)
        if start <= PAGE - 8 and address > 0:
            page = self.pages.get(address - start)
            if page is not None:
                return _U64.unpack_from(page, start)[0]
        return _U64.unpack(self.read(address, 8))[0]

    def i64(self, address: int) -> int:
        return self._cached(address, 8, _I64)

    def u32(self, address: int) -> int:
        return self._cached(address, 4, _U32)

    def i32(self, address: int) -> int:
        return self._cached(address, 4, _I32)

    def u8(self, address: int) -> int:
        return self._cached(address, 1, _U8)

    def i8(self, address: int) -> int:
        return self._cached(address, 1, _I8)

    def f64(self, address: int) -> float:
        return _F64.unpack(self.read(address, 8))[0]

    def ptrs(self, address: int, count: int) -> tuple[int, ...]:
        if count <= 0:
            return ()
        return struct.unpack(f"<{count}Q", self.read(address, 8 * count))

    def cstring(self, address: int, limit: int = 256) -> str:
        out = bytearray()
        while len(out) < limit:
            chunk_len = min(64, PAGE - (address & (PAGE - 1)))
            chunk = self.read(address, chunk_len)
            nul = chunk.find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                break
            out += chunk
            address += chunk_len
        return out[:limit].decode("utf-8", "replace")
