"""CPython 3.12 object layout for x86-64 Linux (LP64), used when the interpreter has no debug info.

Where the numbers come from: each offset was measured with gdb from the DWARF of the pyenv
CPython 3.12.1 build (``libpython3.12.so.1.0`` and
``lib-dynload/_asyncio.cpython-312-x86_64-linux-gnu.so``) through ``coroscope_dwarf.offset``
with the member names in ``DWARF_NAMES``, and read against the 3.12.1 headers on disk
(include/python3.12/internal/pycore_frame.h, pycore_interp.h, pycore_object.h, pycore_dict.h,
cpython/longintrepr.h, cpython/unicodeobject.h, cpython/code.h, cpython/pystate.h, opcode.h).
What changed from 3.11, as those headers have it:

* ``_PyInterpreterFrame`` is reordered: ``f_code`` first, ``previous`` second; ``is_entry`` is
  gone and an entry frame is one with ``owner == FRAME_OWNED_BY_CSTACK`` (3), whose code is the
  interpreter's trampoline, not the program's: readers skip such frames.
* The thread's frame is still ``tstate->cframe->current_frame``.
* ``PyGenObject`` loses ``gi_code``; the code object is the embedded frame's ``f_code``.
* ``PyLongObject`` digits move into ``long_value`` with ``lv_tag`` in place of ``ob_size``.
* str loses ``wstr``: smaller headers; the state bits keep their places (kind bits 2-4,
  compact bit 5, ascii bit 6).
* Managed dicts: one tagged word at ``((PyObject **)obj)-3``, either the dict or, with the low
  bit set, the values pointer minus one (pycore_object.h ``_PyDictOrValues_*``).
* ``sys.modules`` is ``interp->imports.modules``.
* _asyncio keeps the scheduled tasks in the WeakSet ``_scheduled_tasks`` and eager tasks in the
  set ``_eager_tasks`` (Lib/asyncio/tasks.py imports both); ``_all_tasks`` is gone.
* ``INSTRUMENTED_RESUME`` (240) is a RESUME too (genobject.c ``is_resume``).

The ABI is frozen within 3.12.x, so one table serves every 3.12 release.  Fields that do not
exist in 3.12 are ``None``.  ``tests/test_backtrace_layout.py`` checks every number against the
DWARF of the installed 3.12 when the suite runs on it.
"""

VERSION = (3, 12)

# Logical names (coroscope_layouts.FIELDS) whose member is spelt differently in 3.12.
DWARF_NAMES = {
    "PyLongObject.ob_digit": ("PyLongObject", "long_value.ob_digit"),
    "PyInterpreterState.modules": ("PyInterpreterState", "imports.modules"),
}

OFFSETS = {
    "PyObject.ob_type": 8,
    "PyVarObject.ob_size": 16,
    "PyTypeObject.tp_name": 24,
    "PyTypeObject.tp_basicsize": 32,
    "PyTypeObject.tp_flags": 168,
    "PyTypeObject.tp_dict": 264,
    "PyTypeObject.tp_dictoffset": 288,
    "PyTypeObject.tp_mro": 344,
    "PyHeapTypeObject.ht_cached_keys": 880,
    "PyHeapTypeObject.ht_qualname": 872,
    "PyASCIIObject.length": 16,
    "PyASCIIObject.state": 32,
    "PyASCIIObject.sizeof": 40,
    "PyCompactUnicodeObject.sizeof": 56,
    "PyBytesObject.ob_sval": 32,
    "PyTupleObject.ob_item": 24,
    "PyListObject.ob_item": 24,
    "PyLongObject.ob_digit": 24,                    # long_value.ob_digit (cpython/longintrepr.h)
    "PyLongObject.lv_tag": 16,                      # long_value.lv_tag: sign in bits 0-1, digit count from bit 3
    "PyDictValues.values": 0,
    "PyDictValues.valid": None,                     # 3.13+ only
    "PyFloatObject.ob_fval": 16,
    "PyCellObject.ob_ref": 16,
    "PyDictObject.ma_used": 16,
    "PyDictObject.ma_keys": 32,
    "PyDictObject.ma_values": 40,
    "PyDictKeysObject.dk_log2_size": 8,
    "PyDictKeysObject.dk_log2_index_bytes": 9,
    "PyDictKeysObject.dk_kind": 10,
    "PyDictKeysObject.dk_nentries": 24,
    "PyDictKeysObject.dk_indices": 32,
    "PyDictKeyEntry.sizeof": 24,
    "PyDictKeyEntry.me_key": 8,
    "PyDictKeyEntry.me_value": 16,
    "PyDictUnicodeEntry.sizeof": 16,
    "PyDictUnicodeEntry.me_key": 0,
    "PyDictUnicodeEntry.me_value": 8,
    "PySetObject.used": 24,
    "PySetObject.mask": 32,
    "PySetObject.table": 40,
    "setentry.sizeof": 16,
    "PyWeakReference.wr_object": 16,
    "PyModuleObject.md_dict": 16,
    "PyMemberDescrObject.d_member": 40,
    "PyMemberDef.type": 8,
    "PyMemberDef.offset": 16,
    "PyFunctionObject.func_closure": 72,
    "PyFunctionObject.func_qualname": 40,
    "PyFunctionObject.func_code": 48,
    "PyMethodObject.im_func": 16,
    "PyMethodObject.im_self": 24,
    "PyCodeObject.co_firstlineno": 68,
    "PyCodeObject.co_nlocalsplus": 72,
    "PyCodeObject.co_localsplusnames": 96,
    "PyCodeObject.co_localspluskinds": 104,
    "PyCodeObject.co_filename": 112,
    "PyCodeObject.co_name": 120,
    "PyCodeObject.co_qualname": 128,
    "PyCodeObject.co_linetable": 136,
    "PyCodeObject.co_code_adaptive": 192,
    "PyGenObject.gi_code": None,                    # gone in 3.12: the code is the frame's f_code
    "PyGenObject.gi_frame_state": 67,
    "PyGenObject.gi_iframe": 72,
    "PyCoroWrapper.cw_coroutine": 16,
    "PyAsyncGenASend.ags_gen": 16,
    "PyAsyncGenAThrow.agt_gen": 16,
    "_PyInterpreterFrame.f_code": 0,                # first member from 3.12
    "_PyInterpreterFrame.previous": 8,
    "_PyInterpreterFrame.prev_instr": 56,
    "_PyInterpreterFrame.stacktop": 64,
    "_PyInterpreterFrame.owner": 70,
    "_PyInterpreterFrame.localsplus": 72,
    "_PyRuntimeState.interpreters.head": 40,
    "PyInterpreterState.next": 0,
    "PyInterpreterState.threads.head": 72,
    "PyInterpreterState.modules": 944,              # interp->imports.modules from 3.12
    "PyThreadState.next": 8,
    "PyThreadState.cframe": 56,
    "PyThreadState.current_frame": None,            # 3.13+ (3.12 still has cframe)
    "PyThreadState.thread_id": 136,
    "PyThreadState.native_thread_id": 144,
    "_PyCFrame.current_frame": 0,
    "dequeobject.leftblock": 24,
    "dequeobject.leftindex": 40,
    "block.data": 8,
    "block.rightlink": 520,
    "block.BLOCKLEN": 64,
    "FutureObj.fut_loop": 16,
    "FutureObj.fut_callback0": 24,
    "FutureObj.fut_callbacks": 40,
    "FutureObj.fut_state": 88,
    "FutureObj.dict": 104,                          # unused by the readers; 3.13 drops it
    "TaskObj.task_fut_waiter": 128,
    "TaskObj.task_coro": 136,
    "TaskObj.task_name": 144,
    "TaskObj.task_num_cancels_requested": 168,
    "TaskObj.task_context": 152,
    "futureiterobject.future": 16,
    # Include/internal/pycore_context.h, pycore_hamt.h; Python/hamt.c (the array and
    # collision nodes are defined there)
    "PyContext.ctx_vars": 24,
    "PyHamtObject.h_root": 16,
    "PyHamtNode_Bitmap.b_array": 32,
    "PyHamtNode_Array.a_array": 16,
    "PyHamtNode_Collision.c_array": 32,
}

CONSTANTS = {
    # Include/object.h
    "Py_TPFLAGS_MANAGED_DICT": 1 << 4,
    "Py_TPFLAGS_INLINE_VALUES": None,
    # Include/internal/pycore_object.h: _PyObject_DictOrValuesPointer is ((PyDictOrValues *)obj)-3;
    # low bit set: values + 1 is the PyDictValues, else it is the dict.
    "MANAGED_DICT_SCHEME": "tagged-dict-or-values",
    "MANAGED_DICT_OFFSET": -3 * 8,
    "MANAGED_VALUES_OFFSET": None,
    "INLINE_VALUES_OFFSET": None,
    # Include/internal/pycore_frame.h: enum _framestate (same numbers as 3.11)
    "FRAME_CREATED": -2,
    "FRAME_SUSPENDED": -1,
    "FRAME_SUSPENDED_YIELD_FROM": None,
    "FRAME_EXECUTING": 0,
    "FRAME_CLEARED": 4,
    # enum _frameowner
    "FRAME_OWNED_BY_CSTACK": 3,
    # prev_instr is still the last instruction executed.
    "FRAME_INSTR": "last",
    # Include/opcode.h: RESUME 151, INSTRUMENTED_RESUME 240 (what is_resume() accepts).
    "RESUME_OPCODES": (151, 240),
    # Include/internal/pycore_code.h
    "CO_FAST_CELL": 0x40,
    "CO_FAST_FREE": 0x80,
    # Include/cpython/longintrepr.h (30-bit digits on 64-bit builds)
    "PyLong_SHIFT": 30,
    "LONG_SCHEME": "lv_tag",
    # Modules/_asynciomodule.c: fut_state
    "STATE_PENDING": 0,
    "STATE_CANCELLED": 1,
    "STATE_FINISHED": 2,
    # Include/descrobject.h (Py_T_OBJECT, Py_T_OBJECT_EX, Py_T_DOUBLE)
    "T_OBJECT": 6,
    "T_OBJECT_EX": 16,
    "T_DOUBLE": 4,
    "ASYNCIO_TASK_SOURCE": "module-sets",
    "ASYNCIO_TASK_WEAKSETS": ("_scheduled_tasks",),
    "ASYNCIO_TASK_SETS": ("_eager_tasks",),
    # 3.12 keeps the running loop in the thread state and resets it at fork: no getpid per call.
    "GET_RUNNING_LOOP_GETPID": False,
}
