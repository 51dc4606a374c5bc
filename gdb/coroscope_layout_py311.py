"""CPython 3.11 object layout for x86-64 Linux (LP64), used when the interpreter has no debug info.

Where the numbers come from: each offset was measured with gdb (``ptype /o``, via
``coroscope_layouts.dwarf_offset``) from the DWARF of the pyenv CPython 3.11.7 build
(``libpython3.11.so.1.0`` and ``lib-dynload/_asyncio.cpython-311-x86_64-linux-gnu.so``),
and agrees with the 3.11 headers: Include/cpython/object.h (PyTypeObject, PyHeapTypeObject),
Include/internal/pycore_frame.h (_PyInterpreterFrame, PyFrameState), Include/cpython/code.h,
Include/internal/pycore_dict.h, Include/internal/pycore_genobject (cpython/genobject.h),
Include/internal/pycore_interp.h and cpython/pystate.h, Modules/_collectionsmodule.c (deque
blocks), Modules/_asynciomodule.c (FutureObj_HEAD, TaskObj).  Struct layouts do not change
within a 3.11.x series (the ABI is frozen at 3.11.0 final), so one table serves all 3.11.x.
Fields that do not exist in 3.11 are ``None`` (see ``coroscope_layouts``).
``tests/test_backtrace_layout.py`` checks every number against the DWARF of the installed
interpreter, so a wrong entry fails a test rather than a debugging session.
"""

VERSION = (3, 11)

OFFSETS = {
    "PyObject.ob_type": 8,
    "PyVarObject.ob_size": 16,
    "PyTypeObject.tp_name": 24,
    "PyTypeObject.tp_basicsize": 32,
    "PyTypeObject.tp_flags": 168,
    "PyTypeObject.tp_dict": 264,
    "PyTypeObject.tp_dictoffset": 288,
    "PyTypeObject.tp_mro": 344,
    "PyHeapTypeObject.ht_cached_keys": 872,
    "PyHeapTypeObject.ht_qualname": 864,
    "PyASCIIObject.length": 16,
    "PyASCIIObject.state": 32,
    "PyASCIIObject.sizeof": 48,
    "PyCompactUnicodeObject.sizeof": 72,
    "PyBytesObject.ob_sval": 32,
    "PyTupleObject.ob_item": 24,
    "PyListObject.ob_item": 24,
    "PyLongObject.ob_digit": 24,
    "PyLongObject.lv_tag": None,           # 3.12+ only
    "PyDictValues.values": 0,
    "PyDictValues.valid": None,            # 3.13+ only
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
    "PyCodeObject.co_firstlineno": 72,
    "PyCodeObject.co_nlocalsplus": 76,
    "PyCodeObject.co_localsplusnames": 96,
    "PyCodeObject.co_localspluskinds": 104,
    "PyCodeObject.co_filename": 112,
    "PyCodeObject.co_name": 120,
    "PyCodeObject.co_qualname": 128,
    "PyCodeObject.co_linetable": 136,
    "PyCodeObject.co_code_adaptive": 184,
    "PyGenObject.gi_code": 16,
    "PyGenObject.gi_frame_state": 75,
    "PyGenObject.gi_iframe": 80,
    "PyCoroWrapper.cw_coroutine": 16,
    "PyAsyncGenASend.ags_gen": 16,
    "PyAsyncGenAThrow.agt_gen": 16,
    "_PyInterpreterFrame.f_code": 32,
    "_PyInterpreterFrame.previous": 48,
    "_PyInterpreterFrame.prev_instr": 56,
    "_PyInterpreterFrame.stacktop": 64,
    "_PyInterpreterFrame.owner": 69,
    "_PyInterpreterFrame.localsplus": 72,
    "_PyRuntimeState.interpreters.head": 40,
    "PyInterpreterState.next": 0,
    "PyInterpreterState.threads.head": 16,
    "PyInterpreterState.modules": 888,
    "PyThreadState.next": 8,
    "PyThreadState.cframe": 56,
    "PyThreadState.current_frame": None,   # 3.13+ (3.11 reaches the frame through cframe)
    "PyThreadState.thread_id": 152,
    "PyThreadState.native_thread_id": 160,
    "_PyCFrame.current_frame": 8,
    "dequeobject.leftblock": 24,
    "dequeobject.leftindex": 40,
    "block.data": 8,
    "block.rightlink": 520,
    "block.BLOCKLEN": 64,
    "FutureObj.fut_loop": 16,
    "FutureObj.fut_callback0": 24,
    "FutureObj.fut_callbacks": 40,
    "FutureObj.fut_state": 88,
    "FutureObj.dict": 104,
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
    "Py_TPFLAGS_INLINE_VALUES": None,      # 3.13+
    # Include/internal/pycore_object.h: _PyObject_ManagedDictPointer is ((PyObject **)obj)-3,
    # _PyObject_ValuesPointer is ((PyDictValues **)obj)-4 (they sit before the GC header).
    "MANAGED_DICT_SCHEME": "dict-and-values-pointers",
    "MANAGED_DICT_OFFSET": -3 * 8,
    "MANAGED_VALUES_OFFSET": -4 * 8,
    "INLINE_VALUES_OFFSET": None,
    # Include/internal/pycore_frame.h: enum _framestate
    "FRAME_CREATED": -2,
    "FRAME_SUSPENDED": -1,
    "FRAME_SUSPENDED_YIELD_FROM": None,    # 3.13+: here the next instruction says it (below)
    "FRAME_EXECUTING": 0,
    "FRAME_CLEARED": 4,
    # 3.11 marks an entry frame with is_entry, not with an owner value; the C stack owns none.
    "FRAME_OWNED_BY_CSTACK": None,
    # prev_instr points at the last instruction executed (pycore_frame.h); LASTI is prev_instr - code.
    "FRAME_INSTR": "last",
    # Include/opcode.h: RESUME 151 and its specialised form RESUME_QUICK 150.  A suspended
    # generator's next instruction is RESUME with oparg >= 2 when it awaits (genobject.c _PyGen_yf).
    "RESUME_OPCODES": (151, 150),
    # Include/internal/pycore_code.h
    "CO_FAST_CELL": 0x40,
    "CO_FAST_FREE": 0x80,
    # Include/cpython/longintrepr.h (30-bit digits on 64-bit builds)
    "PyLong_SHIFT": 30,
    "LONG_SCHEME": "ob_size",              # the sign and digit count are ob_size
    # Modules/_asynciomodule.c: fut_state
    "STATE_PENDING": 0,
    "STATE_CANCELLED": 1,
    "STATE_FINISHED": 2,
    # Include/structmember.h
    "T_OBJECT": 6,
    "T_OBJECT_EX": 16,
    "T_DOUBLE": 4,
    # Lib/asyncio/tasks.py imports _asyncio._all_tasks (a WeakSet of every pending task).
    "ASYNCIO_TASK_SOURCE": "module-sets",
    "ASYNCIO_TASK_WEAKSETS": ("_all_tasks",),
    "ASYNCIO_TASK_SETS": (),
    # Modules/_asynciomodule.c get_running_loop(): the running-loop holder keeps the pid that set
    # it and every call compares it with getpid() (a forked child must not see its parent's
    # loop), so each asyncio.get_running_loop() -- asyncio.sleep, create_task, wait_for and the
    # frameworks' own calls -- is one getpid syscall.
    "GET_RUNNING_LOOP_GETPID": True,
}
