"""CPython 3.13 object layout for x86-64 Linux (LP64, the default build with the GIL).

Where the numbers come from: each offset was measured with gdb from the DWARF of the pyenv
CPython 3.13.0 build (``libpython3.13.so.1.0`` and
``lib-dynload/_asyncio.cpython-313-x86_64-linux-gnu.so``) through ``coroscope_dwarf.offset``
with the member names in ``DWARF_NAMES``, and read against the 3.13.0 headers on disk
(include/python3.13/internal/pycore_frame.h, pycore_runtime.h, pycore_interp.h, pycore_object.h,
pycore_dict.h, cpython/pystate.h, opcode_ids.h).  The interpreter also publishes many of these
numbers itself, in the ``_Py_DebugOffsets`` that open ``_PyRuntime``; ``coroscope_debug_offsets``
checks this table against them.  What changed from 3.12:

* ``_PyInterpreterFrame``: ``f_code`` is ``f_executable`` and ``prev_instr`` is ``instr_ptr``,
  which points at the current instruction (for a suspended generator: the RESUME after its
  YIELD_VALUE), where ``prev_instr`` pointed at the last one.  CPython's own LASTI is
  ``instr_ptr - code`` now, so reading the line at ``instr_ptr`` is right and reading it as if
  it were ``prev_instr`` (one code unit on) would be wrong on line boundaries.
* The thread's frame is ``tstate->current_frame``; ``_PyCFrame`` is gone.
* Generator frame states are renumbered: ``FRAME_CREATED`` -3, ``FRAME_SUSPENDED`` -2, and the
  new ``FRAME_SUSPENDED_YIELD_FROM`` -1 says "awaiting the object on top of the stack" (genobject.c
  ``_PyGen_yf`` reads the state, no longer the next opcode).
* Managed dicts: values live inline after the object header (``Py_TPFLAGS_INLINE_VALUES``,
  ``PyDictValues`` gains capacity/size/embedded/valid bytes); the dict pointer stays at -3 words.
* ``_PyRuntime`` opens with ``_Py_DebugOffsets``, so everything after it moves.
* FutureObj / TaskObj drop ``dict`` and ``weakreflist``; the flags are bitfields, and
  ``task_num_cancels_requested`` now comes before ``task_fut_waiter``.

Fields that do not exist in 3.13 are ``None``.  ``tests/test_backtrace_layout.py`` checks every
number against the DWARF of the installed 3.13 when the suite runs on it.
"""

VERSION = (3, 13)

DWARF_NAMES = {
    "PyLongObject.ob_digit": ("PyLongObject", "long_value.ob_digit"),
    "PyInterpreterState.modules": ("PyInterpreterState", "imports.modules"),
    "_PyInterpreterFrame.f_code": ("_PyInterpreterFrame", "f_executable"),
    "_PyInterpreterFrame.prev_instr": ("_PyInterpreterFrame", "instr_ptr"),
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
    "PyLongObject.ob_digit": 24,                    # long_value.ob_digit
    "PyLongObject.lv_tag": 16,                      # long_value.lv_tag
    "PyDictValues.values": 8,                       # after capacity/size/embedded/valid bytes (pycore_dict.h)
    "PyDictValues.valid": 3,                        # uint8_t valid: inline values in use
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
    "PyCodeObject.co_code_adaptive": 200,
    "PyGenObject.gi_code": None,                    # gone since 3.12
    "PyGenObject.gi_frame_state": 67,
    "PyGenObject.gi_iframe": 72,
    "PyCoroWrapper.cw_coroutine": 16,
    "PyAsyncGenASend.ags_gen": 16,
    "PyAsyncGenAThrow.agt_gen": 16,
    "_PyInterpreterFrame.f_code": 0,                # f_executable (a code object for Python frames)
    "_PyInterpreterFrame.previous": 8,
    "_PyInterpreterFrame.prev_instr": 56,           # instr_ptr: the current instruction, not the last
    "_PyInterpreterFrame.stacktop": 64,
    "_PyInterpreterFrame.owner": 70,
    "_PyInterpreterFrame.localsplus": 72,
    "_PyRuntimeState.interpreters.head": 632,       # after the _Py_DebugOffsets that open _PyRuntime
    "PyInterpreterState.next": 7264,
    "PyInterpreterState.threads.head": 7344,
    "PyInterpreterState.modules": 7656,             # interp->imports.modules
    "PyThreadState.next": 8,
    "PyThreadState.cframe": None,                   # no _PyCFrame in 3.13
    "PyThreadState.current_frame": 72,              # tstate->current_frame
    "PyThreadState.thread_id": 152,
    "PyThreadState.native_thread_id": 160,
    "_PyCFrame.current_frame": None,                # no _PyCFrame in 3.13
    "dequeobject.leftblock": 24,
    "dequeobject.leftindex": 40,
    "block.data": 8,
    "block.rightlink": 520,
    "block.BLOCKLEN": 64,
    "FutureObj.fut_loop": 16,
    "FutureObj.fut_callback0": 24,
    "FutureObj.fut_callbacks": 40,
    "FutureObj.fut_state": 96,
    "FutureObj.dict": None,                         # 3.13 drops dict and weakreflist (_asynciomodule.c FutureObj_HEAD)
    "TaskObj.task_fut_waiter": 112,
    "TaskObj.task_coro": 120,
    "TaskObj.task_name": 128,
    "TaskObj.task_num_cancels_requested": 104,      # before task_fut_waiter in 3.13, after the bitfields
    "TaskObj.task_context": 136,
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
    "Py_TPFLAGS_INLINE_VALUES": 1 << 2,
    # Include/internal/pycore_object.h: MANAGED_DICT_OFFSET is -3 words (GIL build);
    # _PyObject_InlineValues is (char *)obj + sizeof(PyObject).
    "MANAGED_DICT_SCHEME": "inline-values",
    "MANAGED_DICT_OFFSET": -3 * 8,
    "MANAGED_VALUES_OFFSET": None,
    "INLINE_VALUES_OFFSET": 16,
    # Include/internal/pycore_frame.h: enum _framestate, renumbered
    "FRAME_CREATED": -3,
    "FRAME_SUSPENDED": -2,
    "FRAME_SUSPENDED_YIELD_FROM": -1,
    "FRAME_EXECUTING": 0,
    "FRAME_CLEARED": 4,
    "FRAME_OWNED_BY_CSTACK": 3,
    "FRAME_INSTR": "current",
    # Include/opcode_ids.h: RESUME 149, RESUME_CHECK 207, INSTRUMENTED_RESUME 236 (not needed for
    # awaits, which the frame state says, but kept for a reader that checks the instruction).
    "RESUME_OPCODES": (149, 207, 236),
    "CO_FAST_CELL": 0x40,
    "CO_FAST_FREE": 0x80,
    "PyLong_SHIFT": 30,
    "LONG_SCHEME": "lv_tag",
    "STATE_PENDING": 0,
    "STATE_CANCELLED": 1,
    "STATE_FINISHED": 2,
    "T_OBJECT": 6,
    "T_OBJECT_EX": 16,
    "T_DOUBLE": 4,
    "ASYNCIO_TASK_SOURCE": "module-sets",
    "ASYNCIO_TASK_WEAKSETS": ("_scheduled_tasks",),
    "ASYNCIO_TASK_SETS": ("_eager_tasks",),
    "GET_RUNNING_LOOP_GETPID": False,
}

# Include/internal/pycore_runtime.h: struct _Py_DebugOffsets after its 8-byte cookie, every
# member a uint64_t, in declaration order (coroscope_debug_offsets reads and checks it).
DEBUG_OFFSETS_FIELDS = (
    "version", "free_threaded",
    "runtime_state.size", "runtime_state.finalizing", "runtime_state.interpreters_head",
    "interpreter_state.size", "interpreter_state.id", "interpreter_state.next",
    "interpreter_state.threads_head", "interpreter_state.gc", "interpreter_state.imports_modules",
    "interpreter_state.sysdict", "interpreter_state.builtins", "interpreter_state.ceval_gil",
    "interpreter_state.gil_runtime_state", "interpreter_state.gil_runtime_state_enabled",
    "interpreter_state.gil_runtime_state_locked", "interpreter_state.gil_runtime_state_holder",
    "thread_state.size", "thread_state.prev", "thread_state.next", "thread_state.interp",
    "thread_state.current_frame", "thread_state.thread_id", "thread_state.native_thread_id",
    "thread_state.datastack_chunk", "thread_state.status",
    "interpreter_frame.size", "interpreter_frame.previous", "interpreter_frame.executable",
    "interpreter_frame.instr_ptr", "interpreter_frame.localsplus", "interpreter_frame.owner",
    "code_object.size", "code_object.filename", "code_object.name", "code_object.qualname",
    "code_object.linetable", "code_object.firstlineno", "code_object.argcount",
    "code_object.localsplusnames", "code_object.localspluskinds", "code_object.co_code_adaptive",
    "pyobject.size", "pyobject.ob_type",
    "type_object.size", "type_object.tp_name", "type_object.tp_repr", "type_object.tp_flags",
    "tuple_object.size", "tuple_object.ob_item", "tuple_object.ob_size",
    "list_object.size", "list_object.ob_item", "list_object.ob_size",
    "dict_object.size", "dict_object.ma_keys", "dict_object.ma_values",
    "float_object.size", "float_object.ob_fval",
    "long_object.size", "long_object.lv_tag", "long_object.ob_digit",
    "bytes_object.size", "bytes_object.ob_size", "bytes_object.ob_sval",
    "unicode_object.size", "unicode_object.state", "unicode_object.length",
    "unicode_object.asciiobject_size",
    "gc.size", "gc.collecting",
)

# Published name -> our logical name, for every published offset of a member we read.
DEBUG_OFFSETS_CHECKS = {
    "runtime_state.interpreters_head": "_PyRuntimeState.interpreters.head",
    "interpreter_state.next": "PyInterpreterState.next",
    "interpreter_state.threads_head": "PyInterpreterState.threads.head",
    "interpreter_state.imports_modules": "PyInterpreterState.modules",
    "thread_state.next": "PyThreadState.next",
    "thread_state.current_frame": "PyThreadState.current_frame",
    "thread_state.thread_id": "PyThreadState.thread_id",
    "thread_state.native_thread_id": "PyThreadState.native_thread_id",
    "interpreter_frame.previous": "_PyInterpreterFrame.previous",
    "interpreter_frame.executable": "_PyInterpreterFrame.f_code",
    "interpreter_frame.instr_ptr": "_PyInterpreterFrame.prev_instr",
    "interpreter_frame.localsplus": "_PyInterpreterFrame.localsplus",
    "interpreter_frame.owner": "_PyInterpreterFrame.owner",
    "code_object.filename": "PyCodeObject.co_filename",
    "code_object.name": "PyCodeObject.co_name",
    "code_object.qualname": "PyCodeObject.co_qualname",
    "code_object.linetable": "PyCodeObject.co_linetable",
    "code_object.firstlineno": "PyCodeObject.co_firstlineno",
    "code_object.localsplusnames": "PyCodeObject.co_localsplusnames",
    "code_object.localspluskinds": "PyCodeObject.co_localspluskinds",
    "code_object.co_code_adaptive": "PyCodeObject.co_code_adaptive",
    "pyobject.ob_type": "PyObject.ob_type",
    "type_object.tp_name": "PyTypeObject.tp_name",
    "type_object.tp_flags": "PyTypeObject.tp_flags",
    "tuple_object.ob_item": "PyTupleObject.ob_item",
    "tuple_object.ob_size": "PyVarObject.ob_size",
    "list_object.ob_item": "PyListObject.ob_item",
    "dict_object.ma_keys": "PyDictObject.ma_keys",
    "dict_object.ma_values": "PyDictObject.ma_values",
    "float_object.ob_fval": "PyFloatObject.ob_fval",
    "long_object.lv_tag": "PyLongObject.lv_tag",
    "long_object.ob_digit": "PyLongObject.ob_digit",
    "bytes_object.ob_sval": "PyBytesObject.ob_sval",
    "unicode_object.state": "PyASCIIObject.state",
    "unicode_object.length": "PyASCIIObject.length",
    "unicode_object.asciiobject_size": "PyASCIIObject.sizeof",
}
