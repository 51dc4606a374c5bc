"""Where the fields of CPython's objects are, for every reader of a target's memory.

Every reader asks for an offset by one logical name, ``"PyGenObject.gi_iframe"``, and never
touches a debugger type itself.  That keeps one code path for two sources of truth:

* DWARF: when the interpreter (libpython, the python executable, or the ``_asyncio`` extension)
  carries debug info, the caller passes ``load`` a ``measure(type_name, member_path)`` function
  (in gdb: ``coroscope_dwarf.offset``) and each offset is measured from the real type, so a
  rebuilt interpreter with a different struct layout is still read right;
* the table: a stripped interpreter has no types, so offsets come from
  ``coroscope_layout_py<major><minor>.py``, one file per CPython version, each saying where its
  numbers came from (the way py-spy keeps per-version bindings).

This module and the tables are plain Python with no import of ``gdb``: a reader of our own
(process_vm_readv on a live pid, or an ELF core reader) imports them from this directory and
gets the same numbers, measured the same way.  The version is dispatched in exactly one place,
``table_for``; the readers never compare version numbers, they act on the facts a table states
(an offset that is ``None`` because the member does not exist in that version, a constant such
as ``MANAGED_DICT_SCHEME`` or ``FRAME_SUSPENDED_YIELD_FROM``).

Names are logical, spelt as in 3.11: ``_PyInterpreterFrame.f_code`` is "the frame's code object"
although 3.13 calls the member ``f_executable``, and ``_PyInterpreterFrame.prev_instr`` is "the
frame's instruction pointer" although 3.13 has ``instr_ptr``.  A table whose version spells a
member differently says so in ``DWARF_NAMES`` (logical name -> C type and member path), so DWARF
measures the right member; a member that does not exist in a version is ``None`` in its table.

The choice of source is made per C struct: ``_asyncio`` may have debug info while libpython
does not.  The CPython version comes from the exported ``Py_Version`` constant (3.11+), which
the dynamic symbol table always has, so even a fully stripped interpreter picks the right table.

What 3.14 needs (designed, not built).  3.14 publishes two tables of its own: the
``_Py_DebugOffsets`` at the start of ``_PyRuntime`` (cookie ``xdebugpy``, as in 3.13, grown with
more sections) and ``_Py_AsyncioModuleDebugOffsets`` in the ``_asyncio`` extension's
``.AsyncioDebug`` ELF section (task object: name, awaited_by, is_task, coro, task_node; the
``asyncio_thread_state`` with its ``asyncio_running_loop``/``asyncio_running_task``).  Tasks are
no longer in a module-level WeakSet: each thread state keeps a linked list of its tasks
(``_PyThreadStateImpl.asyncio_tasks_head``, nodes are ``TaskObj.task_node``) and the interpreter
keeps the list of tasks whose thread has gone.  So adding 3.14 is:
one table, ``coroscope_layout_py314.py``, with the offsets this file names plus
``TaskObj.task_node``, ``llist_node.next`` and the thread-state list head, and the constant
``ASYNCIO_TASK_SOURCE = "thread-lists"`` (3.11-3.13 say ``"module-sets"``); and one reader path,
in ``coroscope_tasks.Process.task_addresses``, that walks each thread's list (bounded like every
walk) when the table says so.  The published tables are checked against ours exactly as 3.13's
``_Py_DebugOffsets`` is (``coroscope_debug_offsets``): any disagreement is one line, never output
from guessed offsets.  Frames in 3.14 move ``stacktop`` to a ``stackpointer`` pointer and tag
``f_executable`` (``_PyStackRef``: mask the low bits); both are facts for its table
(``FRAME_STACK_SCHEME``, ``STACKREF_TAG_MASK``), read in the one place that reads a frame.
"""
from __future__ import annotations

import importlib
import os
import re
import sys

# Logical field name -> (C type name, dotted member path) as spelt in CPython 3.11; a path of
# None is the size of the type.  Every name used by the readers is here; a table must give a
# number (or None: not in this version) for each.
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
    "PyLongObject.lv_tag": ("PyLongObject", "long_value.lv_tag"),
    "PyDictValues.values": ("PyDictValues", "values"),
    "PyDictValues.valid": ("PyDictValues", "valid"),
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
    "PyThreadState.current_frame": ("PyThreadState", "current_frame"),
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
    "TaskObj.task_context": ("TaskObj", "task_context"),
    "futureiterobject.future": ("futureiterobject", "future"),
    # A task's contextvars.Context and its HAMT (Python/context.c, Python/hamt.c): the request
    # a task serves is a ContextVar's value in it.
    "PyContext.ctx_vars": ("PyContext", "ctx_vars"),
    "PyHamtObject.h_root": ("PyHamtObject", "h_root"),
    "PyHamtNode_Bitmap.b_array": ("PyHamtNode_Bitmap", "b_array"),
    "PyHamtNode_Array.a_array": ("PyHamtNode_Array", "a_array"),
    "PyHamtNode_Collision.c_array": ("PyHamtNode_Collision", "c_array"),
}

# Constants that are not struct members (enum values, flags, opcodes, schemes); never from DWARF.
CONSTANT_NAMES = (
    "Py_TPFLAGS_MANAGED_DICT", "Py_TPFLAGS_INLINE_VALUES", "MANAGED_DICT_SCHEME",
    "MANAGED_DICT_OFFSET", "MANAGED_VALUES_OFFSET", "INLINE_VALUES_OFFSET",
    "FRAME_CREATED", "FRAME_SUSPENDED", "FRAME_SUSPENDED_YIELD_FROM", "FRAME_EXECUTING",
    "FRAME_CLEARED", "FRAME_OWNED_BY_CSTACK", "FRAME_INSTR", "RESUME_OPCODES",
    "CO_FAST_CELL", "CO_FAST_FREE", "PyLong_SHIFT", "LONG_SCHEME",
    "STATE_PENDING", "STATE_CANCELLED", "STATE_FINISHED", "T_OBJECT_EX", "T_OBJECT", "T_DOUBLE",
    "ASYNCIO_TASK_SOURCE", "ASYNCIO_TASK_WEAKSETS", "ASYNCIO_TASK_SETS", "GET_RUNNING_LOOP_GETPID",
)

_HERE = os.path.dirname(os.path.abspath(__file__))


class Layout:
    """Offsets (``off[name]``, None where the member does not exist) and constants (``const[name]``).

    ``sources`` maps each C type name to "dwarf" or "table:3.11": what was used for it.
    """

    def __init__(self, version: tuple[int, int], off: dict, const: dict, sources: dict):
        self.version = version
        self.off = off
        self.const = const
        self.sources = sources
        self.published = 0  # offsets the interpreter publishes that were checked and agree (3.13+)

    def describe(self) -> str:
        kinds = sorted(set(self.sources.values()))
        return f"CPython {self.version[0]}.{self.version[1]}, offsets from {' + '.join(kinds)}"


class UnsupportedVersion(Exception):
    pass


def supported_versions() -> list[tuple[int, int]]:
    """The versions a table exists for, oldest first."""
    out = []
    for name in os.listdir(_HERE):
        m = re.fullmatch(r"coroscope_layout_py(\d)(\d+)\.py", name)
        if m:
            out.append((int(m.group(1)), int(m.group(2))))
    return sorted(out)


def supported_text() -> str:
    return ", ".join("%d.%d" % v for v in supported_versions())


def table_for(version: tuple[int, int]):
    """The one place a CPython version is turned into a layout table."""
    name = f"coroscope_layout_py{version[0]}{version[1]}"
    if version not in supported_versions():
        raise UnsupportedVersion(
            f"CPython {version[0]}.{version[1]} is not supported (no {name}.py layout table; "
            f"supported: {supported_text()})")
    if _HERE not in sys.path:  # a reader outside gdb may have loaded this file by path
        sys.path.insert(0, _HERE)
    return importlib.import_module(name)


def member(table, name: str) -> tuple[str, str | None]:
    """(C type, member path) of a logical name in the version of ``table``."""
    return getattr(table, "DWARF_NAMES", {}).get(name, FIELDS[name])


def load(version: tuple[int, int], measure=None) -> Layout:
    """The layout for ``version``: each C type from ``measure`` (DWARF) if it knows the type, else the table."""
    table = table_for(version)
    off, sources = {}, {}
    dwarf_types: dict[str, bool] = {}
    for name in FIELDS:
        if table.OFFSETS[name] is None:  # not in this version
            off[name] = None
            continue
        type_name, path = member(table, name)
        value = None
        if measure is not None and dwarf_types.get(type_name, True):
            value = measure(type_name, path)
            dwarf_types[type_name] = value is not None
        if value is None:
            value = table.OFFSETS[name]
            sources[type_name] = f"table:{version[0]}.{version[1]}"
        else:
            sources[type_name] = "dwarf"
        off[name] = value
    const = {name: table.CONSTANTS[name] for name in CONSTANT_NAMES}
    return Layout(version, off, const, sources)
