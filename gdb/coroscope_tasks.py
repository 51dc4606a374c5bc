"""Find every asyncio task in the process, walk its await chain, and say what the leaf waits on.

How tasks are found: asyncio's C accelerator keeps every task in a WeakSet that the module
exposes as ``_asyncio._all_tasks`` (Modules/_asynciomodule.c: the static ``all_tasks``), and the
task each loop is running right now in the dict ``_asyncio._current_tasks`` (loop -> task).  We
reach the module the way ``import`` would: ``_PyRuntime`` (an exported symbol) -> the
interpreter -> ``interp->modules`` (sys.modules) -> ``'_asyncio'`` -> its dict.  Both stock
asyncio loops and coroscope's runtime loop use the same Task type, so one walk serves both; the
loop object's class name tells them apart.

How a chain is walked: a suspended coroutine's frame (``_PyInterpreterFrame`` embedded in the
coroutine object) has, on top of its value stack, the object it is awaiting, which is what
``cr_await`` returns (genobject.c ``_PyGen_yf``: the next instruction is RESUME with oparg >= 2).
Following that from the task's coroutine goes through coroutines, generators and async
generators down to a ``FutureIter`` whose future is the leaf.  A running task's coroutine is
executing instead, so its chain is the thread's frame stack above the coroutine's frame.

How the leaf is classified: by looking where the future is referenced from, never by calling
anything: the loop's timer heap (sleep), the loop's fd registrations (fd read/write), the frame
local ``self`` of the awaiting frame (Lock, Event, Condition, Semaphore, Queue, TaskGroup), the
future's type (gather, Task), its done-callbacks (a concurrent.futures future: a thread).

Output is plain dicts (the JSON the ``coroscope bt`` command parses); formatting is elsewhere.
"""
from __future__ import annotations

import struct
import sys
import time

# gdb's own module is there (in sys.modules) only inside gdb; outside it (used by coroscope's own memory reader too),
# an ``import gdb`` would find this very directory as a namespace package, so it is not imported
gdb = sys.modules.get("gdb")
if not hasattr(gdb, "lookup_type"):
    gdb = None

from coroscope_memory import Unreadable
from coroscope_linetable import parse_linetable
from coroscope_objects import Objects

MAX_CHAIN = 256          # frames in one await chain
MAX_THREAD_FRAMES = 2048
MAX_TASKS = 200_000
MAX_THREADS = 4096

# Wrappers a task's coroutine may sit in that are no await of their own: the chain goes on at
# the attribute named.  coroscope's step timer on a stock asyncio loop wraps every task's
# coroutine (diag/instrument.py); without this a traced task's chain stopped at the wrapper.
TRANSPARENT = {"heap:_StepTimedCoroutine": ("diag.instrument._StepTimedCoroutine", "_coro")}

_U64 = struct.Struct("<Q")
_I32 = struct.Struct("<i")
GENERATOR_KINDS = frozenset(("coroutine", "generator", "async_generator"))
PRIMITIVES = {  # asyncio synchronisation classes -> awaiting kind
    "Lock": "lock", "Event": "event", "Condition": "condition", "Semaphore": "semaphore",
    "BoundedSemaphore": "semaphore", "Queue": "queue", "PriorityQueue": "queue",
    "LifoQueue": "queue", "Barrier": "barrier",
}


class NotPython(Exception):
    pass


def symbol_address(name: str) -> int | None:
    try:
        return int(gdb.parse_and_eval(f"(unsigned long)&{name}"))
    except gdb.error:
        return None


class Process:
    """One look at the process: its threads, loops and tasks.  Read once, then queried."""

    def __init__(self, objects: Objects, runtime_addr: int, live: bool | None = None):
        self.py = objects
        self.m = objects.m
        self.o = objects.o
        self.c = objects.c
        self.runtime = runtime_addr
        if live is None:
            live = gdb.selected_inferior().pid != 0 and not _is_core()
        self.live = live
        self.threads = self._threads()
        self.asyncio_module = self._module_dict("_asyncio")
        self._timer_index: dict[int, dict] = {}
        self._fd_index: dict[int, dict] = {}
        self._primitive_cache: dict[int, dict] = {}
        self._locals_cache: dict[int, tuple] = {}
        self._loop_cache: dict[int, dict] = {}
        self._line_cache: dict[tuple, tuple] = {}     # (code, instr) -> (function, file, line)
        self._header_cache: dict[int, tuple[int, int, int]] = {}
        self._has_cells: dict[int, bool] = {}
        self._local_index: dict[int, dict[str, int]] = {}
        self._resumes_awaiting: dict[tuple, bool] = {}
        self._header_size = self.o["_PyInterpreterFrame.localsplus"]
        self._code_at = self.o["_PyInterpreterFrame.f_code"]
        self._prev_at = self.o["_PyInterpreterFrame.prev_instr"]
        self._top_at = self.o["_PyInterpreterFrame.stacktop"]
        self._owner_role: dict[int, tuple | None] = {}
        self.errors: list[str] = []
        self.running_by_loop = self._current_tasks()
        self.running_tasks = set(self.running_by_loop.values())
        self.request_var = self._request_var()

    def forget_snapshot(self) -> None:
        """Drop what was read of objects that change (a live reader reading the target again),
        the threads' current frames too: a running task's stack is found from them."""
        self.threads = self._threads()
        self._primitive_cache.clear()
        self._timer_index.clear()
        self._fd_index.clear()
        self._header_cache.clear()

    # -- interpreter and threads ----------------------------------------------------------

    def interpreters(self):
        interp = self.m.u64(self.runtime + self.o["_PyRuntimeState.interpreters.head"])
        seen = 0
        while interp and seen < 64:
            yield interp
            interp = self.m.u64(interp + self.o["PyInterpreterState.next"])
            seen += 1

    def _threads(self) -> list[dict]:
        out = []
        for interp in self.interpreters():
            ts = self.m.u64(interp + self.o["PyInterpreterState.threads.head"])
            while ts and len(out) < MAX_THREADS:
                current = self._current_frame(ts)
                out.append({
                    "tstate": ts,
                    "ident": self.m.u64(ts + self.o["PyThreadState.thread_id"]),
                    "native_id": self.m.u64(ts + self.o["PyThreadState.native_thread_id"]),
                    "current_frame": current,
                })
                ts = self.m.u64(ts + self.o["PyThreadState.next"])
        return out

    def _current_frame(self, ts: int) -> int:
        """The thread's innermost frame: tstate->current_frame (3.13), tstate->cframe->current_frame before."""
        if self.o["PyThreadState.current_frame"] is not None:
            return self.m.u64(ts + self.o["PyThreadState.current_frame"])
        cframe = self.m.u64(ts + self.o["PyThreadState.cframe"])
        return self.m.u64(cframe + self.o["_PyCFrame.current_frame"]) if cframe else 0

    def thread_frames(self, thread: dict) -> list[int]:
        """Interpreter frames of a thread, innermost first.

        From 3.12 the C stack owns an entry frame wherever C code called into the interpreter
        (owner FRAME_OWNED_BY_CSTACK, the trampoline's code, not the program's): left out.
        """
        frames, f, seen = [], thread["current_frame"], 0
        cstack = self.c["FRAME_OWNED_BY_CSTACK"]
        while f and seen < MAX_THREAD_FRAMES:
            seen += 1
            if cstack is None or self.m.i8(f + self.o["_PyInterpreterFrame.owner"]) != cstack:
                frames.append(f)
            f = self.m.u64(f + self.o["_PyInterpreterFrame.previous"])
        return frames

    def _module_dict(self, name: str) -> int:
        for interp in self.interpreters():
            modules = self.m.u64(interp + self.o["PyInterpreterState.modules"])
            if not modules:
                continue
            mod = self.py.dict_get(modules, name)
            if mod:
                return self.m.u64(mod + self.o["PyModuleObject.md_dict"])
        return 0

    def _current_tasks(self) -> dict[int, int]:
        if not self.asyncio_module:
            return {}
        d = self.py.dict_get(self.asyncio_module, "_current_tasks")
        return dict(self.py.dict_items(d)) if d else {}

    def task_addresses(self) -> list[int]:
        if not self.asyncio_module:
            return []
        if self.c["ASYNCIO_TASK_SOURCE"] != "module-sets":  # 3.14's per-thread lists: not yet
            raise Unreadable(self.asyncio_module, "tasks kept where this reader does not look")
        out = []
        # 3.11: _all_tasks; 3.12 and 3.13: _scheduled_tasks (weak) and _eager_tasks (strong).
        for name in self.c["ASYNCIO_TASK_WEAKSETS"]:
            weakset = self.py.dict_get(self.asyncio_module, name)
            if not weakset:
                continue
            data = self.py.getattr(weakset, "data")
            for ref in self.py.set_items(data, MAX_TASKS):
                try:
                    target = self.py.weakref_target(ref)
                    if target and self.py.kind(target) != "NoneType":
                        out.append(target)
                except Unreadable:
                    self.errors.append(f"<unreadable at {ref:#x}> (a weak reference in {name})")
        for name in self.c["ASYNCIO_TASK_SETS"]:
            tasks = self.py.dict_get(self.asyncio_module, name)
            if tasks:
                out.extend(self.py.set_items(tasks, MAX_TASKS))
        return sorted(set(out))

    # -- task fields ------------------------------------------------------------------------

    def is_c_future(self, obj: int) -> bool:
        return any(n in ("_asyncio.Future", "_asyncio.Task") for n in self.py.mro_names(obj))

    def is_task(self, obj: int) -> bool:
        names = self.py.mro_names(obj)
        return "_asyncio.Task" in names or "Task" in names

    def future_state(self, fut: int) -> str:
        if self.is_c_future(fut):
            state = self.m.i32(fut + self.o["FutureObj.fut_state"])
        else:
            s = self.py.getattr(fut, "_state")
            return {"PENDING": "pending", "CANCELLED": "cancelled",
                    "FINISHED": "done"}.get(self.py.str(s) if s else "", "unknown")
        return {self.c["STATE_PENDING"]: "pending", self.c["STATE_CANCELLED"]: "cancelled",
                self.c["STATE_FINISHED"]: "done"}.get(state, "unknown")

    def task_fields(self, task: int) -> dict:
        if "_asyncio.Task" in self.py.mro_names(task):
            o = self.o
            raw = self.m.read(task, max(o["TaskObj.task_num_cancels_requested"] + 4, o["TaskObj.task_name"] + 8,
                                        o["TaskObj.task_context"] + 8))
            ptr = _U64.unpack_from
            return {
                "coro": ptr(raw, o["TaskObj.task_coro"])[0],
                "fut_waiter": ptr(raw, o["TaskObj.task_fut_waiter"])[0],
                "loop": ptr(raw, o["FutureObj.fut_loop"])[0],
                "name_obj": ptr(raw, o["TaskObj.task_name"])[0],
                "context": ptr(raw, o["TaskObj.task_context"])[0],
                "cancels": _I32.unpack_from(raw, o["TaskObj.task_num_cancels_requested"])[0],
            }
        # A pure-Python Task (asyncio.tasks._PyTask or a look-alike).
        num = self.py.number(self.py.getattr(task, "_num_cancels_requested")) or 0
        return {
            "coro": self.py.getattr(task, "_coro"),
            "fut_waiter": self.py.getattr(task, "_fut_waiter"),
            "loop": self.py.getattr(task, "_loop"),
            "name_obj": self.py.getattr(task, "_name"),
            "context": self.py.getattr(task, "_context"),
            "cancels": num,
        }

    def _request_var(self) -> int:
        """``runtime.requests.REQUEST_ID``, the ContextVar holding the id of the request a task
        serves (set by coroscope's middlewares and its automatic instrumentation); 0 when the
        target never imported it, and then no task is looked at for one."""
        d = self._module_dict("runtime.requests")
        return self.py.dict_get(d, "REQUEST_ID") if d else 0

    def task_request(self, context: int) -> int | None:
        """The request id in a task's context (its copy, taken when the task was created and
        set by the request it serves), or None."""
        mapping = self.m.u64(context + self.o["PyContext.ctx_vars"])
        value = self.py.hamt_get(mapping, self.request_var) if mapping else 0
        return self.py.number(value) or None

    def task_name(self, task: int, fields: dict | None = None) -> str:
        try:
            n = (fields or self.task_fields(task))["name_obj"]
            kind = self.py.kind(n) if n else ""
            if kind == "str":
                return self.py.str(n, 200)
            if kind == "int":
                # 3.12+ keeps the task counter until the name is asked for (Task.get_name()
                # then formats it the same way).
                return f"Task-{self.py.int(n)}"
            return self.py.repr(n) if n else ""
        except Unreadable:
            return f"<unreadable at {task:#x}>"

    def loop_info(self, loop: int) -> dict:
        cached = self._loop_cache.get(loop)
        if cached is None:
            cached = self._loop_cache[loop] = self._read_loop(loop)
        return dict(cached)

    def _read_loop(self, loop: int) -> dict:
        info = {"id": loop, "address": f"{loop:#x}", "class": "", "thread": None}
        if not loop:
            return info
        try:
            info["class"] = self.py.qualified_type_name(loop)
            ident = self.py.number(self.py.getattr(loop, "_thread_id"))
            if ident:
                for t in self.threads:
                    if t["ident"] == ident:
                        info["thread"] = t["native_id"]
        except Unreadable as exc:
            info["error"] = str(exc)
        return info

    # -- frames ---------------------------------------------------------------------------

    def code_info(self, code: int) -> tuple[str, str, int, list]:
        return _code_info(self, code)

    def _frame_header(self, iframe: int) -> tuple[int, int, int]:
        """(f_code, prev_instr, stacktop) from one read of the frame's fixed part (once a
        snapshot: the walk, the leaf's classification and the live reader's check all ask)."""
        cached = self._header_cache.get(iframe)
        if cached is not None:
            return cached
        raw = self.m.read(iframe, self._header_size)
        self._header_cache[iframe] = header = (_U64.unpack_from(raw, self._code_at)[0],
                                               _U64.unpack_from(raw, self._prev_at)[0],
                                               _I32.unpack_from(raw, self._top_at)[0])
        return header

    def frame_record(self, iframe: int, kind: str) -> dict:
        code, prev, _top = self._frame_header(iframe)
        key = (code, prev)
        place = self._line_cache.get(key)
        if place is None:
            filename, qualname, _first, _table = self.code_info(code)
            line = line_for(self, code, prev - (code + self.o["PyCodeObject.co_code_adaptive"]))
            place = self._line_cache[key] = (qualname, filename, line)
        return {"function": place[0], "file": place[1], "line": place[2], "kind": kind,
                "frame": f"{iframe:#x}"}

    def awaited_by_frame(self, iframe: int, state: int) -> int:
        """What a suspended generator frame awaits (``gi_yieldfrom``), or 0.

        3.13 says so in the frame state (FRAME_SUSPENDED_YIELD_FROM); before, the next
        instruction after prev_instr is a RESUME with oparg >= 2 (genobject.c ``_PyGen_yf``).
        """
        code, prev, top = self._frame_header(iframe)
        if self.c["FRAME_SUSPENDED_YIELD_FROM"] is not None:
            if state != self.c["FRAME_SUSPENDED_YIELD_FROM"]:
                return 0
        else:
            # Whether the instruction after prev_instr is such a RESUME: kept per (code, place),
            # as the line is (quickening turns RESUME into RESUME_QUICK, both in the set).
            key = (code, prev)
            awaits = self._resumes_awaiting.get(key)
            if awaits is None:
                nxt = self.m.read(prev + 2, 2)
                awaits = self._resumes_awaiting[key] = (nxt[0] in self.c["RESUME_OPCODES"]
                                                        and nxt[1] >= 2)
            if not awaits:
                return 0
        if not 0 < top < 100_000:
            return 0
        return self.m.u64(iframe + self.o["_PyInterpreterFrame.localsplus"] + 8 * (top - 1))

    def _code_locals(self, code: int) -> tuple[tuple[str, ...], bytes]:
        """(names, kinds) of a code object's fast locals, cells and free variables."""
        cached = self._locals_cache.get(code)
        if cached is None:
            o = self.o
            n = self.m.i32(code + o["PyCodeObject.co_nlocalsplus"])
            if not 0 <= n <= 10_000:
                raise Unreadable(code, "bad co_nlocalsplus")
            names = self.py.tuple_items(self.m.u64(code + o["PyCodeObject.co_localsplusnames"]), n)
            kinds = self.py.bytes(self.m.u64(code + o["PyCodeObject.co_localspluskinds"]))
            cached = (tuple(self.py.str(x, 200) for x in names), kinds)
            self._locals_cache[code] = cached
        return cached

    def _local_value(self, value: int, kind: int) -> int:
        if value and kind & (self.c["CO_FAST_CELL"] | self.c["CO_FAST_FREE"]):
            try:
                if self.py.kind(value) == "cell":
                    return self.py.cell_contents(value)
            except Unreadable:
                pass
        return value

    def frame_locals(self, iframe: int) -> list[tuple[str, int]]:
        o = self.o
        code = self.m.u64(iframe + o["_PyInterpreterFrame.f_code"])
        names, kinds = self._code_locals(code)
        values = self.m.ptrs(iframe + o["_PyInterpreterFrame.localsplus"], len(names))
        out = []
        for i, (name, value) in enumerate(zip(names, values)):
            value = self._local_value(value, kinds[i] if i < len(kinds) else 0)
            if value:
                out.append((name, value))
        return out

    def local(self, iframe: int, name: str) -> int:
        code = self.m.u64(iframe + self.o["_PyInterpreterFrame.f_code"])
        names, kinds = self._code_locals(code)
        index = self._local_index.get(code)
        if index is None:
            index = self._local_index[code] = {}
            for i, n in enumerate(names):
                index.setdefault(n, i)
        i = index.get(name)
        if i is None:
            return 0
        value = self.m.u64(iframe + self.o["_PyInterpreterFrame.localsplus"] + 8 * i)
        return self._local_value(value, kinds[i] if i < len(kinds) else 0)

    def walk_chain(self, coro: int, frames: list, iframes: list):
        """Fill frames (outermost first) and their addresses; return (leaf object or 0, running thread).

        An object that cannot be read ends the walk with ``Unreadable(its address)``; the frames
        found before it stay in ``frames``.
        """
        obj, leaf, running = coro, 0, None
        seen = set()
        while obj and len(frames) < MAX_CHAIN and obj not in seen:
            seen.add(obj)
            try:
                step = self._chain_step(obj, frames, iframes)
            except Unreadable:
                raise Unreadable(obj) from None
            if step[0] == "next":
                obj = step[1]
            elif step[0] == "leaf":
                leaf = step[1]
                break
            elif step[0] == "running":
                running = step[1]
                break
            else:
                break
        return leaf, running

    def _chain_step(self, obj: int, frames: list, iframes: list) -> tuple:
        """One object of an await chain: ('next', obj) | ('leaf', fut) | ('running', tid) | ('end',)."""
        py, o, c = self.py, self.o, self.c
        k = py._kind_of_type.get(py.type_of(obj)) or py.kind(obj)   # the first: once per type
        if k in GENERATOR_KINDS:
            state = self.m.i8(obj + o["PyGenObject.gi_frame_state"])
            iframe = obj + o["PyGenObject.gi_iframe"]
            if state > c["FRAME_EXECUTING"]:  # FRAME_COMPLETED, FRAME_CLEARED
                return ("end",)
            if state == c["FRAME_EXECUTING"]:
                return ("running", self._running_frames(iframe, frames, iframes))
            frames.append(self.frame_record(iframe, k))
            iframes.append(iframe)
            if state == c["FRAME_CREATED"]:
                return ("end",)
            nxt = self.awaited_by_frame(iframe, state)
            return ("next", nxt) if nxt else ("end",)
        if k == "coroutine_wrapper":
            return ("next", self.m.u64(obj + o["PyCoroWrapper.cw_coroutine"]))
        if k == "async_generator_asend":
            return ("next", self.m.u64(obj + o["PyAsyncGenASend.ags_gen"]))
        if k == "async_generator_athrow":
            return ("next", self.m.u64(obj + o["PyAsyncGenAThrow.agt_gen"]))
        if k == "_asyncio.FutureIter":
            return ("leaf", self.m.u64(obj + o["futureiterobject.future"]))
        wrapper = TRANSPARENT.get(k)
        if wrapper is not None and py.qualified_type_name(obj) == wrapper[0]:
            return ("next", py.getattr(obj, wrapper[1]))
        return ("leaf", obj)

    def _running_frames(self, coro_iframe: int, frames: list, iframes: list):
        for thread in self.threads:
            stack = self.thread_frames(thread)
            if coro_iframe in stack:
                above = stack[: stack.index(coro_iframe) + 1]
                for f in reversed(above):
                    frames.append(self.frame_record(f, "running"))
                    iframes.append(f)
                return thread["native_id"]
        frames.append(self.frame_record(coro_iframe, "running"))
        iframes.append(coro_iframe)
        return None

    # -- what a leaf waits on -------------------------------------------------------------

    def timers(self, loop: int) -> dict:
        """future address -> TimerHandle, for the loop's asyncio.sleep timers."""
        index = self._timer_index.get(loop)
        if index is not None:
            return index
        index = {}
        try:
            scheduled = self.py.getattr(loop, "_scheduled")
            handles = self.py.seq_items(scheduled) if scheduled else ()
        except Unreadable:
            handles = ()
        for h in handles:
            try:
                args = self.py.getattr(h, "_args")
                if args and self.py.kind(args) == "tuple":
                    for a in self.py.tuple_items(args, 4):
                        index.setdefault(a, h)
            except Unreadable:
                continue
        self._timer_index[loop] = index
        return index

    def fd_waits(self, loop: int) -> dict:
        """object address -> (fd, 'read'|'write') for every handle registered on the loop's fds.

        Works for the stock selector loops (``loop._selector._fd_to_key``: SelectorKey tuples whose
        data is (reader, writer)) and for loops that keep their own fd -> handle maps: any dict of
        the loop (or of its selector) keyed by int whose values are handles or pairs of them.
        """
        index = self._fd_index.get(loop)
        if index is not None:
            return index
        index = {}
        containers = []
        try:
            for _, v in self.py.instance_dict_items(loop):
                containers.append(v)
            for attr in ("_selector", "_poller"):
                sel = self.py.getattr(loop, attr)
                if sel and self.py.kind(sel).startswith("heap:"):
                    for _, v in self.py.instance_dict_items(sel):
                        containers.append(v)
        except Unreadable:
            pass
        for d in containers:
            try:
                if self.py.kind(d) != "dict":
                    continue
                items = self.py.dict_items(d, 65536)
                if not items or self.py.kind(items[0][0]) != "int":
                    continue
                for key, value in items:
                    fd = self.py.int(key)
                    self._index_fd_value(index, fd, value, None, 0)
            except Unreadable:
                continue
        self._fd_index[loop] = index
        return index

    def _index_fd_value(self, index, fd, value, mode, depth):
        if not value or depth > 3:
            return
        k = self.py.kind(value)
        if k == "NoneType":
            return
        names = self.py.mro_names(value)
        if "Handle" in names:
            args = self.py.getattr(value, "_args")
            if args and self.py.kind(args) == "tuple":
                for a in self.py.tuple_items(args, 8):
                    index.setdefault(a, (fd, mode or "read"))
            index.setdefault(value, (fd, mode or "read"))
            cb = self.py.getattr(value, "_callback")
            if cb and self.py.kind(cb) == "method":
                index.setdefault(self.m.u64(cb + self.o["PyMethodObject.im_self"]), (fd, mode or "read"))
        elif "tuple" in names:
            items = self.py.tuple_items(value, 8)
            if "SelectorKey" in names and len(items) == 4:
                self._index_fd_value(index, fd, items[3], None, depth + 1)
            elif len(items) == 2 and mode is None:
                self._index_fd_value(index, fd, items[0], "read", depth + 1)
                self._index_fd_value(index, fd, items[1], "write", depth + 1)

    def classify(self, leaf: int, iframes: list, loop: int, fut_waiter: int) -> dict:
        py = self.py
        fut = leaf or fut_waiter
        if not fut:
            return {"kind": "ready"} if iframes else {"kind": "unknown"}
        try:
            names = py.mro_names(fut)
        except Unreadable:
            return {"kind": "unknown", "object": f"<unreadable at {fut:#x}>"}
        info: dict = {"future": f"{fut:#x}", "future_type": py.qualified_type_name(fut)}
        if not any(n in ("_asyncio.Future", "Future") for n in names):
            # Awaiting something that is not a future: a bare ``yield`` (sleep(0)) or a foreign object.
            info["kind"] = "object"
            info["type"] = py.qualified_type_name(fut)
            return info
        if self.is_task(fut):
            info.update(kind="task", task=fut, task_name=self.task_name(fut),
                        task_state=self.future_state(fut))
            return info
        if "_GatheringFuture" in names:
            children = py.getattr(fut, "_children")
            info.update(kind="gather", children=self._children(py.seq_items(children) if children else ()))
            return info
        # The awaiting frame's ``self``: a synchronisation primitive, a TaskGroup, a StreamReader.
        for iframe in reversed(iframes[-4:]):
            try:
                owner = self.local(iframe, "self")
            except Unreadable:
                continue
            if not owner:
                continue
            role = self._role_of_owner(owner)
            if role is None:
                continue
            if role[0] == "taskgroup":
                tasks = py.getattr(owner, "_tasks")
                info.update(kind="taskgroup", taskgroup=f"{owner:#x}",
                            children=self._children(py.seq_items(tasks) if tasks else ()))
                return info
            if role[0] == "primitive":
                info.update(kind=role[1], primitive=role[2], object=f"{owner:#x}")
                info.update(self._primitive_details(owner, role[1]))
                return info
            if role[0] == "stream":
                transport = py.getattr(owner, "_transport")
                fd = py.number(py.getattr(transport, "_sock_fd")) if transport else None
                info.update(kind="fd", mode="read", fd=fd, via="StreamReader")
                return info
        timer = self.timers(loop).get(fut)
        if timer:
            when = py.getattr_float(timer, "_when")
            info.update(kind="sleep", deadline=when)
            if self.live and when is not None:
                info["remaining_s"] = round(when - time.monotonic(), 3)
            return info
        fdw = self.fd_waits(loop).get(fut)
        if fdw:
            info.update(kind="fd", fd=fdw[0], mode=fdw[1], via="selector")
            return info
        source = self._concurrent_source(fut)
        if source:
            info.update(kind="thread", concurrent_future=f"{source:#x}")
            info.update(self._worker_of(source))
            return info
        info["kind"] = "future"
        return info

    def _role_of_owner(self, owner: int) -> tuple | None:
        """What an awaiting frame's ``self`` makes of the wait, by its type (kept per type: the
        same few classes own thousands of waits): ('taskgroup',), ('primitive', kind, class
        name), ('stream',) or None."""
        py = self.py
        t = py.type_of(owner)
        if t in self._owner_role:
            return self._owner_role[t]
        onames = py.mro_names(owner)
        role = None
        if "TaskGroup" in onames:
            role = ("taskgroup",)
        else:
            for cls in onames:
                if cls in PRIMITIVES and "asyncio" in py.type_module(t):
                    role = ("primitive", PRIMITIVES[cls], py.qualified_type_name(owner))
                    break
            else:
                if "StreamReader" in onames:
                    role = ("stream",)
        self._owner_role[t] = role
        return role

    def _children(self, items) -> list[dict]:
        out = []
        for child in items[:1000]:
            try:
                entry = {"id": child, "state": self.future_state(child)}
                if self.is_task(child):
                    entry["name"] = self.task_name(child)
                    entry["task"] = True
                out.append(entry)
            except Unreadable:
                out.append({"id": child, "error": f"<unreadable at {child:#x}>"})
        return out

    def _primitive_details(self, owner: int, kind: str) -> dict:
        cached = self._primitive_cache.get(owner)
        if cached is None:
            cached = self._primitive_cache[owner] = self._read_primitive(owner, kind)
        return dict(cached)

    def _read_primitive(self, owner: int, kind: str) -> dict:
        py, out = self.py, {}
        try:
            attr = "_getters" if kind == "queue" else "_waiters"
            waiters = py.getattr(owner, attr)
            out["waiters"] = len(py.seq_items(waiters)) if waiters and py.kind(waiters) != "NoneType" else 0
            if kind == "lock":
                out["locked"] = bool(py.number(py.getattr(owner, "_locked")))
            elif kind == "event":
                out["is_set"] = bool(py.number(py.getattr(owner, "_value")))
            elif kind == "semaphore":
                out["value"] = py.number(py.getattr(owner, "_value"))
            elif kind == "queue":
                q = py.getattr(owner, "_queue")
                out["qsize"] = len(py.seq_items(q)) if q else 0
                putters = py.getattr(owner, "_putters")
                out["putters"] = len(py.seq_items(putters)) if putters else 0
        except Unreadable as exc:
            out["error"] = str(exc)
        return out

    def _concurrent_source(self, fut: int) -> int:
        """The concurrent.futures.Future an asyncio future is chained to (wrap_future), or 0."""
        py = self.py
        callbacks = []
        if self.is_c_future(fut):
            cb0 = self.m.u64(fut + self.o["FutureObj.fut_callback0"])
            if cb0:
                callbacks.append(cb0)
            more = self.m.u64(fut + self.o["FutureObj.fut_callbacks"])
            if more and py.kind(more) == "list":
                for item in py.list_items(more, 16):
                    if py.kind(item) == "tuple":
                        callbacks.extend(py.tuple_items(item, 1))
        for cb in callbacks:
            if py.kind(cb) != "function":
                continue
            closure = self.m.u64(cb + self.o["PyFunctionObject.func_closure"])
            if not closure:
                continue
            for cell in py.tuple_items(closure, 8):
                value = py.cell_contents(cell)
                if value and "concurrent.futures" in py.type_module(py.type_of(value)):
                    return value
        return 0

    def _worker_of(self, source: int) -> dict:
        """The thread running the work item of a concurrent future, found on thread stacks."""
        for thread in self.threads:
            for iframe in self.thread_frames(thread)[:64]:
                try:
                    owner = self.local(iframe, "self")
                    if owner and self.py.getattr(owner, "future") == source:
                        fn = self.py.getattr(owner, "fn")
                        return {"thread": thread["native_id"],
                                "function": self.py.repr(fn) if fn else None}
                except Unreadable:
                    continue
        return {"thread": None}

    # -- one task -------------------------------------------------------------------------

    def task_record(self, task: int) -> dict:
        rec: dict = {"id": task, "address": f"{task:#x}", "name": "", "state": "unknown",
                     "frames": [], "awaiting": {"kind": "unknown"}}
        try:
            f = self.task_fields(task)
            rec["name"] = self.task_name(task, f)
            rec["loop"] = self.loop_info(f["loop"])
            if self.request_var and f["context"]:
                request = self.task_request(f["context"])
                if request:
                    rec["request"] = request
            state = self.future_state(task)
            if task in self.running_tasks:
                state = "running"
            elif state == "pending" and f["cancels"] > 0:
                state = "cancelling"
            rec["state"] = state
            if state in ("done", "cancelled"):
                rec["awaiting"] = {"kind": "done"}
                return rec
            frames, iframes = rec["frames"], []
            rec["_iframes"] = iframes
            leaf, running = self.walk_chain(f["coro"], frames, iframes)
            if running is not None or (frames and frames[-1]["kind"] == "running"):
                rec["state"] = "running"
                rec["awaiting"] = {"kind": "running", "thread": running}
                return rec
            rec["awaiting"] = self.classify(leaf, iframes, f["loop"], f["fut_waiter"])
        except Unreadable as exc:
            rec["error"] = str(exc)
        return rec

    def all_records(self) -> list[dict]:
        records = [self.task_record(t) for t in self.task_addresses()]
        self._add_holders(records)
        return records

    def _add_holders(self, records: list[dict]) -> None:
        """For plain futures: which other tasks hold the future in a frame's locals."""
        wanted = {}
        for rec in records:
            aw = rec.get("awaiting", {})
            if aw.get("kind") == "future":
                wanted[int(aw["future"], 16)] = aw
                aw["held_by"] = []
        if not wanted:
            return
        for rec in records:
            for iframe in rec.get("_iframes", []):
                try:
                    if not self._may_hold(iframe, wanted):
                        continue
                    for _name, value in self.frame_locals(iframe):
                        aw = wanted.get(value)
                        if aw is not None and aw is not rec["awaiting"] and rec["id"] not in aw["held_by"]:
                            aw["held_by"].append(rec["id"])
                except Unreadable:
                    continue


    def _may_hold(self, iframe: int, wanted: dict) -> bool:
        """False when no local of the frame is one of ``wanted`` (one read, no per-local work);
        a frame with cells or free variables is always looked at local by local."""
        code = self._frame_header(iframe)[0]
        names, kinds = self._code_locals(code)
        cells = self._has_cells.get(code)
        if cells is None:
            mask = self.c["CO_FAST_CELL"] | self.c["CO_FAST_FREE"]
            cells = self._has_cells[code] = any(k & mask for k in kinds)
        if cells:
            return True
        values = self.m.ptrs(iframe + self.o["_PyInterpreterFrame.localsplus"], len(names))
        return not wanted.keys().isdisjoint(values)


_CODE_CACHE: dict[int, tuple] = {}


def _code_info(proc: Process, code: int) -> tuple:
    info = _CODE_CACHE.get(code)
    if info is None:
        py, o = proc.py, proc.o
        filename = py.str(proc.m.u64(code + o["PyCodeObject.co_filename"]), 1024)
        qualname = py.str(proc.m.u64(code + o["PyCodeObject.co_qualname"]), 512)
        first = proc.m.i32(code + o["PyCodeObject.co_firstlineno"])
        table = parse_linetable(py.bytes(proc.m.u64(code + o["PyCodeObject.co_linetable"]), 1 << 20), first)
        info = (filename, qualname, first, table)
        _CODE_CACHE[code] = info
    return info


def reset_caches() -> None:
    _CODE_CACHE.clear()


def line_for(proc: Process, code: int, offset: int) -> int | None:
    table = _code_info(proc, code)[3]
    for start, end, line in table:
        if start <= offset < end:
            return line
    return None


def _is_core() -> bool:
    try:
        return "core dump" in gdb.execute("info target", to_string=True).lower()
    except gdb.error:
        return False
