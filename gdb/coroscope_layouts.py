"""Where the fields of CPython's objects are: from DWARF when gdb has it, else from a table.

Every reader in these scripts asks for an offset by one name, ``"PyGenObject.gi_iframe"``, and
never touches a gdb.Type itself.  That keeps one code path for both sources of truth:

* DWARF: when the interpreter (libpython, the python executable, or the ``_asyncio`` extension)
  carries debug info, ``gdb.lookup_type`` answers and each offset is measured from the real type
  (so a rebuilt interpreter with a different struct layout is still read right);
* the table: a stripped interpreter has no types, so offsets come from
  ``coroscope_layout_py<major><minor>.py``, one file per CPython version, each saying where its
  numbers came from (the way py-spy keeps per-version bindings).

The choice is made per C struct: ``_asyncio`` may have debug info while libpython does not.  The
CPython version comes from the exported ``Py_Version`` constant (3.11+), which the dynamic symbol
table always has, so even a fully stripped interpreter picks the right table.
"""
from __future__ import annotations

import importlib

try:
    import gdb
except ImportError:  # outside gdb (the memory reader): tables only, load(use_dwarf=False)
    gdb = None

# Field name -> (C type name for gdb.lookup_type, dotted member path).
# Every name used by the readers is here; a table file must give a number for each.
FIELDS = {
    "PyObject.ob_type": ("PyObject", "ob_type"),
    "PyVarObject.ob_size": ("PyVarObject", "ob_size"),
    "PyTypeObject.tp_name": ("PyTypeObject", "tp_name"),
    "PyTypeObject.tp_basicsize": ("PyTypeObject", "tp_basicsize"),
    "PyTypeObject.tp_flags": ("PyTypeObject", "tp_flags"),
    "PyTypeObject.tp_dict": ("PyTypeObject", "tp_dict"),
    "PyTypeObject.tp_dictoffset": ("PyTypeObject", "tp_dictoffset"),
    "PyTypeObject.tp_mro": ("PyTypeObject", "tp_mro"),
    "PyHeapTypeObject.ht_cached_keys": ("PyHeapTypeObject", "ht_cached_keys"),
    "PyHeapTypeObject.ht_qualname": ("PyHeapTypeObject", "ht_qualname"),
    "PyASCIIObject.length": ("PyASCIIObject", "length"),
    "PyASCIIObject.state": ("PyASCIIObject", "state"),
    "PyASCIIObject.sizeof": ("PyASCIIObject", None),
    "PyCompactUnicodeObject.sizeof": ("PyCompactUnicodeObject", None),
    "PyBytesObject.ob_sval": ("PyBytesObject", "ob_sval"),
    "PyTupleObject.ob_item": ("PyTupleObject", "ob_item"),
    "PyListObject.ob_item": ("PyListObject", "ob_item"),
    "PyLongObject.ob_digit": ("PyLongObject", "ob_digit"),
    "PyFloatObject.ob_fval": ("PyFloatObject", "ob_fval"),
    "PyCellObject.ob_ref": ("PyCellObject", "ob_ref"),
    "PyDictObject.ma_used": ("PyDictObject", "ma_used"),
    "PyDictObject.ma_keys": ("PyDictObject", "ma_keys"),
    "PyDictObject.ma_values": ("PyDictObject", "ma_values"),
    "PyDictKeysObject.dk_log2_size": ("PyDictKeysObject", "dk_log2_size"),
    "PyDictKeysObject.dk_log2_index_bytes": ("PyDictKeysObject", "dk_log2_index_bytes"),
    "PyDictKeysObject.dk_kind": ("PyDictKeysObject", "dk_kind"),
    "PyDictKeysObject.dk_nentries": ("PyDictKeysObject", "dk_nentries"),
    "PyDictKeysObject.dk_indices": ("PyDictKeysObject", "dk_indices"),
    "PyDictKeyEntry.sizeof": ("PyDictKeyEntry", None),
    "PyDictKeyEntry.me_key": ("PyDictKeyEntry", "me_key"),
    "PyDictKeyEntry.me_value": ("PyDictKeyEntry", "me_value"),
    "PyDictUnicodeEntry.sizeof": ("PyDictUnicodeEntry", None),
    "PyDictUnicodeEntry.me_key": ("PyDictUnicodeEntry", "me_key"),
    "PyDictUnicodeEntry.me_value": ("PyDictUnicodeEntry", "me_value"),
    "PySetObject.used": ("PySetObject", "used"),
    "PySetObject.mask": ("PySetObject", "mask"),
    "PySetObject.table": ("PySetObject", "table"),
    "setentry.sizeof": ("setentry", None),
    "PyWeakReference.wr_object": ("PyWeakReference", "wr_object"),
    "PyModuleObject.md_dict": ("PyModuleObject", "md_dict"),
    "PyMemberDescrObject.d_member": ("PyMemberDescrObject", "d_member"),
    "PyMemberDef.type": ("PyMemberDef", "type"),
    "PyMemberDef.offset": ("PyMemberDef", "offset"),
    "PyFunctionObject.func_closure": ("PyFunctionObject", "func_closure"),
    "PyFunctionObject.func_qualname": ("PyFunctionObject", "func_qualname"),
    "PyFunctionObject.func_code": ("PyFunctionObject", "func_code"),
    "PyMethodObject.im_func": ("PyMethodObject", "im_func"),
    "PyMethodObject.im_self": ("PyMethodObject", "im_self"),
    "PyCodeObject.co_firstlineno": ("PyCodeObject", "co_firstlineno"),
    "PyCodeObject.co_nlocalsplus": ("PyCodeObject", "co_nlocalsplus"),
    "PyCodeObject.co_localsplusnames": ("PyCodeObject", "co_localsplusnames"),
    "PyCodeObject.co_localspluskinds": ("PyCodeObject", "co_localspluskinds"),
    "PyCodeObject.co_filename": ("PyCodeObject", "co_filename"),
    "PyCodeObject.co_name": ("PyCodeObject", "co_name"),
    "PyCodeObject.co_qualname": ("PyCodeObject", "co_qualname"),
    "PyCodeObject.co_linetable": ("PyCodeObject", "co_linetable"),
    "PyCodeObject.co_code_adaptive": ("PyCodeObject", "co_code_adaptive"),
    "PyGenObject.gi_code": ("PyGenObject", "gi_code"),
    "PyGenObject.gi_frame_state": ("PyGenObject", "gi_frame_state"),
    "PyGenObject.gi_iframe": ("PyGenObject", "gi_iframe"),
    "PyCoroWrapper.cw_coroutine": ("PyCoroWrapper", "cw_coroutine"),
    "PyAsyncGenASend.ags_gen": ("PyAsyncGenASend", "ags_gen"),
    "PyAsyncGenAThrow.agt_gen": ("PyAsyncGenAThrow", "agt_gen"),
    "_PyInterpreterFrame.f_code": ("_PyInterpreterFrame", "f_code"),
    "_PyInterpreterFrame.previous": ("_PyInterpreterFrame", "previous"),
    "_PyInterpreterFrame.prev_instr": ("_PyInterpreterFrame", "prev_instr"),
    "_PyInterpreterFrame.stacktop": ("_PyInterpreterFrame", "stacktop"),
    "_PyInterpreterFrame.owner": ("_PyInterpreterFrame", "owner"),
    "_PyInterpreterFrame.localsplus": ("_PyInterpreterFrame", "localsplus"),
    "_PyRuntimeState.interpreters.head": ("_PyRuntimeState", "interpreters.head"),
    "PyInterpreterState.next": ("PyInterpreterState", "next"),
    "PyInterpreterState.threads.head": ("PyInterpreterState", "threads.head"),
    "PyInterpreterState.modules": ("PyInterpreterState", "modules"),
    "PyThreadState.next": ("PyThreadState", "next"),
    "PyThreadState.cframe": ("PyThreadState", "cframe"),
    "PyThreadState.thread_id": ("PyThreadState", "thread_id"),
    "PyThreadState.native_thread_id": ("PyThreadState", "native_thread_id"),
    "_PyCFrame.current_frame": ("_PyCFrame", "current_frame"),
    "dequeobject.leftblock": ("dequeobject", "leftblock"),
    "dequeobject.leftindex": ("dequeobject", "leftindex"),
    "block.data": ("block", "data"),
    "block.rightlink": ("block", "rightlink"),
    "block.BLOCKLEN": ("block", "data#count"),
    # _asyncio (Modules/_asynciomodule.c): the C Future and Task.
    "FutureObj.fut_loop": ("FutureObj", "fut_loop"),
    "FutureObj.fut_callback0": ("FutureObj", "fut_callback0"),
    "FutureObj.fut_callbacks": ("FutureObj", "fut_callbacks"),
    "FutureObj.fut_state": ("FutureObj", "fut_state"),
    "FutureObj.dict": ("FutureObj", "dict"),
    "TaskObj.task_fut_waiter": ("TaskObj", "task_fut_waiter"),
    "TaskObj.task_coro": ("TaskObj", "task_coro"),
    "TaskObj.task_name": ("TaskObj", "task_name"),
    "TaskObj.task_num_cancels_requested": ("TaskObj", "task_num_cancels_requested"),
    "futureiterobject.future": ("futureiterobject", "future"),
}

# Constants that are not struct members (enum values, flags, opcodes); never from DWARF.
CONSTANT_NAMES = (
    "Py_TPFLAGS_MANAGED_DICT", "MANAGED_DICT_OFFSET", "MANAGED_VALUES_OFFSET",
    "FRAME_CREATED", "FRAME_SUSPENDED", "FRAME_EXECUTING", "FRAME_CLEARED",
    "RESUME_OPCODES", "CO_FAST_CELL", "CO_FAST_FREE", "PyLong_SHIFT",
    "STATE_PENDING", "STATE_CANCELLED", "STATE_FINISHED", "T_OBJECT_EX", "T_OBJECT", "T_DOUBLE",
)


class Layout:
    """Offsets (``off[name]``) and constants (``const[name]``) for one interpreter.

    ``sources`` maps each C type name to "dwarf" or "table:3.11": what was used for it.
    """

    def __init__(self, version: tuple[int, int], off: dict, const: dict, sources: dict):
        self.version = version
        self.off = off
        self.const = const
        self.sources = sources

    def describe(self) -> str:
        kinds = sorted(set(self.sources.values()))
        return f"CPython {self.version[0]}.{self.version[1]}, offsets from {' + '.join(kinds)}"


class UnsupportedVersion(Exception):
    pass


def table_for(version: tuple[int, int]):
    name = f"coroscope_layout_py{version[0]}{version[1]}"
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UnsupportedVersion(
            f"CPython {version[0]}.{version[1]} is not supported (no {name}.py layout table)") from None


def dwarf_offset(type_name: str, path: str | None) -> int | None:
    """The offset (or the size when path is None) measured from debug info, or None."""
    try:
        t = gdb.lookup_type(type_name).strip_typedefs()
    except gdb.error:
        return None
    if path is None:
        return t.sizeof
    offset = 0
    count = path.endswith("#count")
    if count:
        path = path[: -len("#count")]
    for part in path.split("."):
        fields = {f.name: f for f in t.fields()}
        if part not in fields:
            return None
        f = fields[part]
        offset += f.bitpos // 8
        t = f.type.strip_typedefs()
    if count:
        return t.range()[1] + 1
    return offset


def load(version: tuple[int, int], use_dwarf: bool = True) -> Layout:
    table = table_for(version)
    off, sources = {}, {}
    dwarf_types: dict[str, bool] = {}
    for name, (type_name, path) in FIELDS.items():
        value = None
        if use_dwarf and dwarf_types.get(type_name, True):
            value = dwarf_offset(type_name, path)
            dwarf_types[type_name] = value is not None
        if value is None:
            value = table.OFFSETS[name]
            sources[type_name] = f"table:{version[0]}.{version[1]}"
        else:
            sources[type_name] = "dwarf"
        off[name] = value
    const = {name: table.CONSTANTS[name] for name in CONSTANT_NAMES}
    return Layout(version, off, const, sources)
