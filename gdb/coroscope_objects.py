"""Readers for CPython objects, one method family per object type, all from raw memory.

In the spirit of CPython's Tools/gdb/libpython.py, but reading bytes at offsets from
``coroscope_layouts`` instead of gdb.Value fields, so the same code runs with or without the
interpreter's debug info.  Every walk is bounded: strings by ``MAX_STR``, containers by
``max_items``, lookups by MRO length.  Anything that does not look like what it should be
raises ``Unreadable``.

Type identity: static (C) types are recognised by ``tp_name`` only when the type is not a heap
type, so a Python class that happens to be called ``coroutine`` is never read as one.
"""
from __future__ import annotations

import struct

from coroscope_memory import PAGE, Memory, Unreadable

MAX_STR = 4096
MAX_ITEMS = 100_000
MAX_HAMT_NODES = 256
Py_TPFLAGS_HEAPTYPE = 1 << 9
_U64 = struct.Struct("<Q")
_PAGE_MASK = PAGE - 1
_LAST_WORD = PAGE - 8


class Objects:
    def __init__(self, memory: Memory, layout):
        self.m = memory
        self.o = layout.off
        self.c = layout.const
        self.layout = layout
        self._type_info: dict[int, tuple] = {}   # type addr -> (name, is_heap, flags)
        self._mro: dict[int, tuple] = {}
        self._mro_names: dict[int, tuple] = {}
        self._str_cache: dict[int, str] = {}
        self._member_cache: dict[tuple, tuple | None] = {}
        self._module_of_type: dict[int, str] = {}
        self._kind_of_type: dict[int, str] = {}
        self._pages = memory.pages           # the cache itself (cleared, never replaced)
        self._type_at = self.o["PyObject.ob_type"]

    # -- object header and types -------------------------------------------------------------

    def type_of(self, obj: int) -> int:
        # Asked some 17 times a task: the page cache's lookup is done here, not through u64.
        address = obj + self._type_at
        start = address & _PAGE_MASK
        page = self._pages.get(address - start) if start <= _LAST_WORD and address > 0 else None
        t = _U64.unpack_from(page, start)[0] if page is not None else self.m.u64(address)
        if t == 0:
            raise Unreadable(obj, "NULL type")
        return t

    def _info(self, t: int) -> tuple:
        info = self._type_info.get(t)
        if info is None:
            name = self.m.cstring(self.m.u64(t + self.o["PyTypeObject.tp_name"]), 200)
            flags = self.m.u64(t + self.o["PyTypeObject.tp_flags"])
            info = (name, bool(flags & Py_TPFLAGS_HEAPTYPE), flags)
            self._type_info[t] = info
        return info

    def type_name(self, t: int) -> str:
        return self._info(t)[0]

    def kind(self, obj: int) -> str:
        """``tp_name`` for static types ('str', 'coroutine', '_asyncio.Task'), else 'heap:Name'."""
        t = self.type_of(obj)
        kind = self._kind_of_type.get(t)
        if kind is None:
            name, heap, _ = self._info(t)
            kind = self._kind_of_type[t] = ("heap:" + name) if heap and "." not in name else name
        return kind

    def type_flags(self, t: int) -> int:
        return self._info(t)[2]

    def mro(self, t: int) -> tuple[int, ...]:
        mro = self._mro.get(t)
        if mro is None:
            tup = self.m.u64(t + self.o["PyTypeObject.tp_mro"])
            mro = tuple(self.tuple_items(tup, 64)) if tup else (t,)
            self._mro[t] = mro
        return mro

    def mro_names(self, obj: int) -> tuple[str, ...]:
        t = self.type_of(obj)
        names = self._mro_names.get(t)
        if names is None:
            names = self._mro_names[t] = tuple(self.type_name(k) for k in self.mro(t))
        return names

    def type_module(self, t: int) -> str:
        mod = self._module_of_type.get(t)
        if mod is None:
            mod = ""
            d = self.m.u64(t + self.o["PyTypeObject.tp_dict"])
            if d:
                v = self.dict_get(d, "__module__")
                if v and self.kind(v) == "str":
                    mod = self.str(v)
            self._module_of_type[t] = mod
        return mod

    def qualified_type_name(self, obj: int) -> str:
        t = self.type_of(obj)
        name, heap, _ = self._info(t)
        if heap and "." not in name:
            mod = self.type_module(t)
            return f"{mod}.{name}" if mod and mod != "builtins" else name
        return name

    # -- scalars ---------------------------------------------------------------------------

    def str(self, obj: int, limit: int = MAX_STR) -> str:
        cached = self._str_cache.get(obj)
        if cached is not None:
            return cached if len(cached) <= limit else cached[:limit] + "..."
        length, kind, ascii_ = self._str_header(obj)
        n = min(length, limit)
        if ascii_:
            data = obj + self.o["PyASCIIObject.sizeof"]
            text = self.m.read(data, n).decode("ascii", "replace")
        else:
            data = obj + self.o["PyCompactUnicodeObject.sizeof"]
            raw = self.m.read(data, n * kind)
            text = raw.decode({1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind], "replace")
        if length > limit:
            return text + "..."
        if len(self._str_cache) < 200_000:
            self._str_cache[obj] = text  # only whole strings are cached
        return text

    def _str_header(self, obj: int) -> tuple[int, int, int]:
        length = self.m.i64(obj + self.o["PyASCIIObject.length"])
        state = self.m.u32(obj + self.o["PyASCIIObject.state"])
        kind = (state >> 2) & 7
        if length < 0 or not (state >> 5) & 1 or kind not in (1, 2, 4):
            raise Unreadable(obj, "not a compact str")
        return length, kind, (state >> 6) & 1

    def bytes(self, obj: int, limit: int = 1 << 16) -> bytes:
        size = self.m.i64(obj + self.o["PyVarObject.ob_size"])
        if size < 0 or size > limit:
            raise Unreadable(obj, "bytes too large")
        return self.m.read(obj + self.o["PyBytesObject.ob_sval"], size)

    def int(self, obj: int) -> int:
        if self.c["LONG_SCHEME"] == "lv_tag":
            # 3.12+: lv_tag holds the sign (0 positive, 1 zero, 2 negative) and digits << 3.
            tag = self.m.u64(obj + self.o["PyLongObject.lv_tag"])
            n, negative = tag >> 3, (tag & 3) == 2
        else:
            size = self.m.i64(obj + self.o["PyVarObject.ob_size"])
            n, negative = abs(size), size < 0
        if n > 64:
            raise Unreadable(obj, "int too large")
        value = 0
        shift = self.c["PyLong_SHIFT"]
        base = obj + self.o["PyLongObject.ob_digit"]
        for i in reversed(range(n)):
            value = (value << shift) | self.m.u32(base + 4 * i)
        return -value if negative else value

    def float(self, obj: int) -> float:
        return self.m.f64(obj + self.o["PyFloatObject.ob_fval"])

    # -- containers ------------------------------------------------------------------------

    def var_size(self, obj: int, max_items: int = MAX_ITEMS) -> int:
        size = self.m.i64(obj + self.o["PyVarObject.ob_size"])
        if size < 0:
            raise Unreadable(obj, "negative size")
        return min(size, max_items)

    def tuple_items(self, obj: int, max_items: int = MAX_ITEMS) -> tuple[int, ...]:
        return self.m.ptrs(obj + self.o["PyTupleObject.ob_item"], self.var_size(obj, max_items))

    def list_items(self, obj: int, max_items: int = MAX_ITEMS) -> tuple[int, ...]:
        n = self.var_size(obj, max_items)
        items = self.m.u64(obj + self.o["PyListObject.ob_item"])
        return self.m.ptrs(items, n) if n else ()

    def seq_items(self, obj: int, max_items: int = MAX_ITEMS) -> tuple[int, ...]:
        k = self.kind(obj)
        if k == "tuple":
            return self.tuple_items(obj, max_items)
        if k == "list":
            return self.list_items(obj, max_items)
        if k == "collections.deque":
            return self.deque_items(obj, max_items)
        if k in ("set", "frozenset"):
            return self.set_items(obj, max_items)
        raise Unreadable(obj, f"not a sequence: {k}")

    def dict_items(self, obj: int, max_items: int = MAX_ITEMS) -> list[tuple[int, int]]:
        keys = self.m.u64(obj + self.o["PyDictObject.ma_keys"])
        values = self.m.u64(obj + self.o["PyDictObject.ma_values"])
        return self._dict_entries(keys, values, max_items)

    def _dict_entries(self, keys: int, values: int, max_items: int) -> list[tuple[int, int]]:
        o = self.o
        log2_index_bytes = self.m.u8(keys + o["PyDictKeysObject.dk_log2_index_bytes"])
        dk_kind = self.m.u8(keys + o["PyDictKeysObject.dk_kind"])
        nentries = self.m.i64(keys + o["PyDictKeysObject.dk_nentries"])
        if not 0 <= nentries <= MAX_ITEMS * 4 or log2_index_bytes > 40:
            raise Unreadable(keys, "bad dict keys")
        entries = keys + o["PyDictKeysObject.dk_indices"] + (1 << log2_index_bytes)
        if dk_kind == 0:
            esize, kofs, vofs = (o["PyDictKeyEntry.sizeof"], o["PyDictKeyEntry.me_key"],
                                 o["PyDictKeyEntry.me_value"])
        else:
            esize, kofs, vofs = (o["PyDictUnicodeEntry.sizeof"], o["PyDictUnicodeEntry.me_key"],
                                 o["PyDictUnicodeEntry.me_value"])
        raw = self.m.ptrs(entries, nentries * esize // 8)
        per = esize // 8
        split_values = self.m.ptrs(values + o["PyDictValues.values"], nentries) if values else None
        out = []
        for i in range(nentries):
            key = raw[i * per + kofs // 8]
            value = split_values[i] if split_values is not None else raw[i * per + vofs // 8]
            if key and value:
                out.append((key, value))
                if len(out) >= max_items:
                    break
        return out

    def hamt_get(self, hamt: int, key: int) -> int:
        """The value stored under the object ``key`` (by identity, as a ContextVar is looked up)
        in a HAMT, the mapping of a ``contextvars.Context``; 0 when absent.

        Walked whole rather than by the key's hash: a context holds a handful of variables, and
        the walk needs no hash function of the target.  A bitmap or collision node holds
        (key, value) pairs, a pair with no key holding a sub-node; an array node holds 32
        sub-nodes.  Bounded in nodes and depth (a 32-bit hash is 7 levels, then collisions).
        """
        o = self.o
        stack = [(self.m.u64(hamt + o["PyHamtObject.h_root"]), 0)]
        nodes = 0
        while stack:
            node, depth = stack.pop()
            nodes += 1
            if nodes > MAX_HAMT_NODES or depth > 8:
                raise Unreadable(hamt, "context mapping too large")
            k = self.kind(node)
            if k == "hamt_array_node":
                stack.extend((c, depth + 1) for c in self.m.ptrs(node + o["PyHamtNode_Array.a_array"], 32) if c)
                continue
            if k == "hamt_bitmap_node":
                at = o["PyHamtNode_Bitmap.b_array"]
            elif k == "hamt_collision_node":
                at = o["PyHamtNode_Collision.c_array"]
            else:
                raise Unreadable(node, f"not a context mapping node: {k}")
            items = self.m.ptrs(node + at, self.var_size(node, 2 * 64))
            for i in range(0, len(items) - 1, 2):
                if items[i] == key:
                    return items[i + 1]
                if not items[i] and items[i + 1] and k == "hamt_bitmap_node":
                    stack.append((items[i + 1], depth + 1))
        return 0

    def dict_get(self, obj: int, name: str) -> int:
        """The value for a str key ``name`` (compared by content), or 0."""
        for key, value in self.dict_items(obj):
            if self._str_eq(key, name):
                return value
        return 0

    def _str_eq(self, key: int, name: str) -> bool:
        try:
            if self.kind(key) != "str":
                return False
            cached = self._str_cache.get(key)
            if cached is None and self._str_header(key)[0] != len(name):
                return False
            return self.str(key) == name
        except Unreadable:
            return False

    def set_items(self, obj: int, max_items: int = MAX_ITEMS) -> list[int]:
        mask = self.m.i64(obj + self.o["PySetObject.mask"])
        table = self.m.u64(obj + self.o["PySetObject.table"])
        if not 0 <= mask < (MAX_ITEMS * 8):
            raise Unreadable(obj, "bad set")
        esize = self.o["setentry.sizeof"] // 8
        raw = self.m.ptrs(table, (mask + 1) * esize)
        out = []
        for i in range(0, len(raw), esize):
            key = raw[i]
            if key:
                out.append(key)
        # The dummy entry (a deleted slot) is one static object; it is the most common key
        # whose type is the dummy type, so drop keys of that type.
        return [k for k in out if self._not_dummy(k)][:max_items]

    def _not_dummy(self, key: int) -> bool:
        try:
            return "dummy" not in self.type_name(self.type_of(key))
        except Unreadable:
            return False

    def deque_items(self, obj: int, max_items: int = MAX_ITEMS) -> list[int]:
        o = self.o
        n = self.var_size(obj, max_items)
        block = self.m.u64(obj + o["dequeobject.leftblock"])
        index = self.m.i64(obj + o["dequeobject.leftindex"])
        blocklen = o["block.BLOCKLEN"]
        out = []
        while len(out) < n and block:
            data = self.m.ptrs(block + o["block.data"], blocklen)
            take = data[index:index + (n - len(out))]
            out.extend(take)
            index = 0
            block = self.m.u64(block + o["block.rightlink"])
        return out

    def weakref_target(self, obj: int) -> int:
        return self.m.u64(obj + self.o["PyWeakReference.wr_object"])

    def cell_contents(self, obj: int) -> int:
        return self.m.u64(obj + self.o["PyCellObject.ob_ref"])

    # -- attributes ------------------------------------------------------------------------

    def instance_dict_items(self, obj: int) -> list[tuple[int, int]]:
        t = self.type_of(obj)
        flags = self.type_flags(t)
        c = self.c
        if flags & c["Py_TPFLAGS_MANAGED_DICT"]:
            scheme = c["MANAGED_DICT_SCHEME"]
            values = 0
            if scheme == "dict-and-values-pointers":       # 3.11
                values = self.m.u64(obj + c["MANAGED_VALUES_OFFSET"])
                d = 0 if values else self.m.u64(obj + c["MANAGED_DICT_OFFSET"])
            elif scheme == "tagged-dict-or-values":        # 3.12
                word = self.m.u64(obj + c["MANAGED_DICT_OFFSET"])
                values, d = (word + 1, 0) if word & 1 else (0, word)
            else:                                          # 3.13 "inline-values"
                d = self.m.u64(obj + c["MANAGED_DICT_OFFSET"])
                if flags & c["Py_TPFLAGS_INLINE_VALUES"]:
                    inline = obj + c["INLINE_VALUES_OFFSET"]
                    if self.m.u8(inline + self.o["PyDictValues.valid"]):
                        values = inline
            if values:
                keys = self.m.u64(t + self.o["PyHeapTypeObject.ht_cached_keys"])
                return self._dict_entries(keys, values, MAX_ITEMS)
        else:
            offset = self.m.i64(t + self.o["PyTypeObject.tp_dictoffset"])
            if offset <= 0:
                return []
            d = self.m.u64(obj + offset)
        return self.dict_items(d) if d else []

    def _slot(self, t: int, name: str):
        """(offset, member type) of a __slots__ / PyMemberDef attribute found on the MRO."""
        key = (t, name)
        if key in self._member_cache:
            return self._member_cache[key]
        found = None
        for klass in self.mro(t):
            d = self.m.u64(klass + self.o["PyTypeObject.tp_dict"])
            if not d:
                continue
            descr = self.dict_get(d, name)
            if descr:
                if self.kind(descr) == "member_descriptor":
                    member = self.m.u64(descr + self.o["PyMemberDescrObject.d_member"])
                    found = (self.m.i64(member + self.o["PyMemberDef.offset"]),
                             self.m.i32(member + self.o["PyMemberDef.type"]))
                break
        self._member_cache[key] = found
        return found

    def getattr(self, obj: int, name: str) -> int:
        """The attribute's object address (0 if absent); slots first, then the instance dict."""
        slot = self._slot(self.type_of(obj), name)
        if slot is not None:
            offset, mtype = slot
            if mtype in (self.c["T_OBJECT"], self.c["T_OBJECT_EX"]):
                return self.m.u64(obj + offset)
            return 0
        for key, value in self.instance_dict_items(obj):
            if self._str_eq(key, name):
                return value
        return self.class_attr(self.type_of(obj), name)

    def class_attr(self, t: int, name: str) -> int:
        """A class attribute found on the MRO (``_state = _PENDING`` in asyncio.Future), or 0."""
        for klass in self.mro(t):
            d = self.m.u64(klass + self.o["PyTypeObject.tp_dict"])
            if d:
                value = self.dict_get(d, name)
                if value:
                    return value
        return 0

    def getattr_float(self, obj: int, name: str):
        slot = self._slot(self.type_of(obj), name)
        if slot is not None and slot[1] == self.c["T_DOUBLE"]:
            return self.m.f64(obj + slot[0])
        v = self.getattr(obj, name)
        return self.number(v)

    def number(self, v: int):
        if not v:
            return None
        k = self.kind(v)
        if k == "float":
            return self.float(v)
        if k == "int" or k == "bool":
            return self.int(v)
        return None

    def gen_code(self, gen: int) -> int:
        """A generator's code object: ``gi_code`` in 3.11, its frame's code from 3.12."""
        if self.o["PyGenObject.gi_code"] is not None:
            return self.m.u64(gen + self.o["PyGenObject.gi_code"])
        return self.m.u64(gen + self.o["PyGenObject.gi_iframe"] + self.o["_PyInterpreterFrame.f_code"])

    # -- display ---------------------------------------------------------------------------

    def repr(self, obj: int, depth: int = 2, limit: int = 120) -> str:
        """A short, bounded description of the object; never fails."""
        if not obj:
            return "NULL"
        try:
            k = self.kind(obj)
            if k == "str":
                text = repr(self.str(obj, limit))
            elif k == "int":
                text = str(self.int(obj))
            elif k == "bool":
                text = "True" if self.int(obj) else "False"
            elif k == "float":
                text = repr(self.float(obj))
            elif k == "NoneType":
                text = "None"
            elif k == "bytes":
                text = repr(self.bytes(obj, limit))
            elif k in ("tuple", "list") and depth > 0:
                items = self.seq_items(obj, 8)
                n = self.m.i64(obj + self.o["PyVarObject.ob_size"])
                inner = ", ".join(self.repr(i, depth - 1, 40) for i in items)
                if n > len(items):
                    inner += ", ..."
                text = f"({inner})" if k == "tuple" else f"[{inner}]"
            elif k == "dict":
                text = f"<dict of {self.m.i64(obj + self.o['PyDictObject.ma_used'])} items>"
            elif k in ("coroutine", "generator", "async_generator"):
                code = self.gen_code(obj)
                text = f"<{k} {self.str(self.m.u64(code + self.o['PyCodeObject.co_qualname']))}>"
            elif k == "function":
                text = f"<function {self.str(self.m.u64(obj + self.o['PyFunctionObject.func_qualname']))}>"
            else:
                name = k[5:] if k.startswith("heap:") else k
                text = f"<{name} object at {obj:#x}>"
        except Unreadable:
            return f"<unreadable at {obj:#x}>"
        return text if len(text) <= limit else text[: limit - 3] + "..."
