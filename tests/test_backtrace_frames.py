"""The running interpreter's layout table against its own live frames, read byte by byte.

No gdb: the table is loaded in plain Python (as a reader of our own would) and the process
reads its own memory with ctypes, with the offsets and the frame rules the gdb walkers use.
Each reading is compared with what the interpreter itself says: the line of a suspended
coroutine (``cr_frame.f_lineno``), what it awaits (``cr_await``), its state, its code object,
a blocked thread's frames from its thread state.  On 3.13 the instruction pointer is the current
instruction (``instr_ptr``, the RESUME after the yield), not 3.11's last one (``prev_instr``, the
yield): the test checks both that the line is right and that the old rule would misread it.
"""
from __future__ import annotations

import asyncio
import ctypes
import sys
import threading
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "gdb"))
import coroscope_layouts as layouts  # noqa: E402
from coroscope_linetable import parse_linetable  # noqa: E402

sys.path.remove(str(ROOT / "gdb"))

LAYOUT = layouts.load(sys.version_info[:2])
O, C = LAYOUT.off, LAYOUT.const


def u64(addr: int) -> int:
    return int.from_bytes(ctypes.string_at(addr, 8), "little")


def i32(addr: int) -> int:
    return int.from_bytes(ctypes.string_at(addr, 4), "little", signed=True)


def i8(addr: int) -> int:
    return int.from_bytes(ctypes.string_at(addr, 1), "little", signed=True)


def line_at(code: types.CodeType, instr: int) -> int | None:
    offset = instr - (id(code) + O["PyCodeObject.co_code_adaptive"])
    for start, end, line in parse_linetable(code.co_linetable, code.co_firstlineno):
        if start <= offset < end:
            return line
    return None


class Box:
    pass


@types.coroutine
def pause(box):
    yield box


async def waiter(box):
    await pause(box)
    return 1


async def two_lines(box):
    x = 1
    await pause(box); y = 2  # noqa: E702 (the await and the next statement on one line)
    return x + y


def frame_of(coro) -> int:
    return id(coro) + O["PyGenObject.gi_iframe"]


@pytest.mark.parametrize("fn", [waiter, two_lines])
def test_a_suspended_coroutine_read_from_memory(fn):
    box = Box()
    coro = fn(box)
    assert i8(id(coro) + O["PyGenObject.gi_frame_state"]) == C["FRAME_CREATED"]
    assert coro.send(None) is box
    iframe = frame_of(coro)
    state = i8(id(coro) + O["PyGenObject.gi_frame_state"])
    expected_state = C["FRAME_SUSPENDED_YIELD_FROM"]
    assert state == (C["FRAME_SUSPENDED"] if expected_state is None else expected_state)
    assert u64(iframe + O["_PyInterpreterFrame.f_code"]) == id(coro.cr_code)
    instr = u64(iframe + O["_PyInterpreterFrame.prev_instr"])
    assert line_at(coro.cr_code, instr) == coro.cr_frame.f_lineno
    # What it awaits is on top of its value stack (the pause() generator), as cr_await says.
    top = i32(iframe + O["_PyInterpreterFrame.stacktop"])
    awaited = u64(iframe + O["_PyInterpreterFrame.localsplus"] + 8 * (top - 1))
    assert awaited == id(coro.cr_await)
    if C["FRAME_SUSPENDED_YIELD_FROM"] is None:
        # 3.11 / 3.12: the instruction after prev_instr is the RESUME that says "awaiting".
        nxt = ctypes.string_at(instr + 2, 2)
        assert nxt[0] in C["RESUME_OPCODES"] and nxt[1] >= 2
    else:
        # 3.13: instr_ptr is that RESUME itself; where a 3.11 reader would look, one unit on,
        # there is none, so the old rule would find no await at all.
        assert ctypes.string_at(instr, 1)[0] in C["RESUME_OPCODES"]
        assert ctypes.string_at(instr + 2, 1)[0] not in C["RESUME_OPCODES"]
    coro.close()


def test_the_code_of_a_generator():
    coro = waiter(Box())
    if O["PyGenObject.gi_code"] is not None:
        assert u64(id(coro) + O["PyGenObject.gi_code"]) == id(coro.cr_code)
    else:  # 3.12+: the frame's code
        assert u64(frame_of(coro) + O["_PyInterpreterFrame.f_code"]) == id(coro.cr_code)
    coro.close()


def test_a_blocked_threads_frames_read_from_memory():
    """A thread blocked in Event.wait (in C): its frames, innermost first, from its thread state."""
    ctypes.pythonapi.PyThreadState_Get.restype = ctypes.c_void_p
    found, release = {}, threading.Event()

    def worker():
        found["tstate"] = ctypes.pythonapi.PyThreadState_Get()
        found["ready"] = True
        release.wait()

    t = threading.Thread(target=worker)
    t.start()
    try:
        for _ in range(6000):  # until the worker is inside Condition.wait (a bound, not a timing)
            if found.get("ready") and _blocked(t):
                break
            threading.Event().wait(0.01)
        assert _blocked(t)
        ts = found["tstate"]
        if O["PyThreadState.current_frame"] is not None:
            frame = u64(ts + O["PyThreadState.current_frame"])
        else:
            frame = u64(u64(ts + O["PyThreadState.cframe"]) + O["_PyCFrame.current_frame"])
        codes = []
        while frame and len(codes) < 50:
            owner = i8(frame + O["_PyInterpreterFrame.owner"])
            if C["FRAME_OWNED_BY_CSTACK"] is None or owner != C["FRAME_OWNED_BY_CSTACK"]:
                codes.append(u64(frame + O["_PyInterpreterFrame.f_code"]))
            frame = u64(frame + O["_PyInterpreterFrame.previous"])
        assert codes[:3] == [id(threading.Condition.wait.__code__), id(threading.Event.wait.__code__),
                             id(worker.__code__)]
        assert u64(ts + O["PyThreadState.native_thread_id"]) == t.native_id
        assert u64(ts + O["PyThreadState.thread_id"]) == t.ident
    finally:
        release.set()
        t.join()


def _blocked(t: threading.Thread) -> bool:
    frame = sys._current_frames().get(t.ident)
    return frame is not None and frame.f_code is threading.Condition.wait.__code__


def test_ints_read_from_memory():
    for value in (0, 1, -1, 7, -(2 ** 40), 2 ** 100 + 3, -(10 ** 30)):
        obj = id(value)
        if C["LONG_SCHEME"] == "lv_tag":
            tag = u64(obj + O["PyLongObject.lv_tag"])
            n, negative = tag >> 3, (tag & 3) == 2
        else:
            size = int.from_bytes(ctypes.string_at(obj + O["PyVarObject.ob_size"], 8), "little", signed=True)
            n, negative = abs(size), size < 0
        digits = [int.from_bytes(ctypes.string_at(obj + O["PyLongObject.ob_digit"] + 4 * i, 4), "little")
                  for i in range(n)]
        read = sum(d << (C["PyLong_SHIFT"] * i) for i, d in enumerate(digits))
        assert (-read if negative else read) == value


def test_asyncio_keeps_its_tasks_where_the_table_says():
    import _asyncio

    async def main():
        blocked = asyncio.Event()
        task = asyncio.ensure_future(blocked.wait())
        await asyncio.sleep(0)
        held = set()
        for name in C["ASYNCIO_TASK_WEAKSETS"]:
            held |= set(getattr(_asyncio, name))
        for name in C["ASYNCIO_TASK_SETS"]:
            held |= set(getattr(_asyncio, name))
        task.cancel()
        return task in held

    assert asyncio.run(main())
