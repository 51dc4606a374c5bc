"""Every asyncio task of a running process and its await chain, read from outside, never stopped.

This is the second reader of the layout layer in ``gdb/``: the same per-version tables
(``coroscope_layouts``), the same object readers (``coroscope_objects``) and the same task walk
(``coroscope_tasks.Process``) that ``coro json`` runs inside gdb, over ``vmread.ProcessMemory``
instead of gdb's ptrace.  So ``coroscope bt PID`` gives the JSON gdb gives, with no copy of an
offset and no second walk to keep in step.  DWARF is never used here: the tables are checked
against the interpreter's debug info by the layer's own tests.

What is new is that the target keeps running while we read.  A chain can change between two
reads: a task finishes and its memory is reused, a coroutine resumes and suspends somewhere
else.  Three defences, from cheap to thorough:

* every object is checked before it is believed: a task must have a sane reference count and a
  type whose MRO names ``Task``; the layer's readers bound every size, count and depth and raise
  ``Unreadable`` on anything that does not look like what it should be;
* each task's record is then re-checked against fresh memory (no page cache): the task's own
  fields and the fixed part of every frame of its chain, with the slot holding what the frame
  awaits.  If any byte differs, the pages are dropped and the task is read again, at most
  ``RETRIES`` times;
* a task still changing after that is reported as ``torn`` (state and awaiting kind ``torn``, no
  frames), and counted in the document's ``torn``: a chain that was never seen whole is never
  printed as if it were true.

A task that vanished (freed, or its memory reused by something that is not a task) is left out
and counted in ``vanished``.  Nothing here writes to, signals or stops the target.
"""
from __future__ import annotations

import os
import time

from diag.errors import CoroscopeError, TargetGone

from . import layer, symbols
from .vmread import ProcessMemory, Unreadable

RETRIES = 3
MAX_REFCNT = 1 << 40

_layouts = layer.module("coroscope_layouts")
_objects = layer.module("coroscope_objects")
_tasks = layer.module("coroscope_tasks")
_format = layer.module("coroscope_format")


class Reader:
    """A reader attached (by pid only: nothing is attached) to one live process."""

    def __init__(self, pid: int):
        if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
            raise CoroscopeError(f"no process with pid {pid}")
        self.pid = pid
        try:
            found = symbols.find(pid)
        except FileNotFoundError:
            raise TargetGone(f"process {pid} exited before it could be read") from None
        except PermissionError:
            from .vmread import permission_message
            raise CoroscopeError(permission_message(pid)) from None
        if "_PyRuntime" not in found:
            raise CoroscopeError(f"pid {pid} is not a Python process: no _PyRuntime symbol in "
                                 "its executable or libpython")
        if "Py_Version" not in found:
            raise CoroscopeError(f"pid {pid}: no Py_Version symbol: not CPython 3.11 or later")
        self.runtime = found["_PyRuntime"]
        self.memory = ProcessMemory(pid)
        try:
            hexversion = self.memory.u32(found["Py_Version"])
        except Unreadable:
            raise CoroscopeError(f"pid {pid}: cannot read Py_Version") from None
        self.version = (hexversion >> 24, (hexversion >> 16) & 0xFF)
        try:
            self.layout = _layouts.load(self.version, use_dwarf=False)
        except _layouts.UnsupportedVersion as exc:
            raise CoroscopeError(str(exc)) from None
        self.objects = None

    def close(self) -> None:
        self.memory.close()

    # -- one snapshot --------------------------------------------------------------------

    def process(self):
        """A fresh ``coroscope_tasks.Process`` over memory as it is now."""
        self.memory.new_snapshot()
        _tasks.reset_caches()
        objects = _objects.Objects(self.memory, self.layout)
        try:
            proc = _tasks.Process(objects, self.runtime, live=True)
        except Unreadable as exc:
            self._gone_check()
            raise CoroscopeError(f"pid {self.pid}: cannot read the interpreter state: {exc}") from None
        proc.layout = self.layout
        return proc

    def _gone_check(self) -> None:
        if not os.path.exists(f"/proc/{self.pid}"):
            raise TargetGone(f"process {self.pid} exited while its memory was being read")

    def records(self, proc) -> tuple[list[dict], dict]:
        """(task records, counts) with every record checked against fresh memory."""
        counts = {"torn": 0, "vanished": 0, "retried": 0}
        out = []
        for task in proc.task_addresses():
            rec = self._checked_record(proc, task, counts)
            if rec is not None:
                out.append(rec)
        proc._add_holders(out)
        return out, counts

    def _is_live_task(self, proc, task: int) -> bool:
        try:
            refcnt = self.memory.u64(task)
            return 0 < refcnt < MAX_REFCNT and proc.is_task(task)
        except Unreadable:
            return False

    def _checked_record(self, proc, task: int, counts: dict) -> dict | None:
        for attempt in range(RETRIES + 1):
            if not self._is_live_task(proc, task):
                counts["vanished"] += 1
                return None
            rec = proc.task_record(task)
            regions = self._regions(proc, task, rec)
            try:
                stale = [(a, n) for a, n in regions
                         if self.memory.read(a, n) != self.memory.fresh(a, n)]
            except Unreadable:
                stale = regions
            if not stale:
                return rec
            counts["retried"] += 1
            for a, n in regions:
                self.memory.forget(a, n)
            proc._primitive_cache.clear()
            proc._timer_index.clear()
            proc._fd_index.clear()
        counts["torn"] += 1
        return {"id": task, "address": f"{task:#x}", "name": rec.get("name", ""),
                "state": "torn", "frames": [], "awaiting": {"kind": "torn"},
                "error": f"still changing after {RETRIES} re-reads"}

    def _regions(self, proc, task: int, rec: dict) -> list[tuple[int, int]]:
        """(address, size) of the bytes this record was built from: what must not have changed."""
        o = self.layout.off
        regions = [(task, o["TaskObj.task_num_cancels_requested"] + 4)]
        header = o["_PyInterpreterFrame.localsplus"]
        for iframe in rec.get("_iframes", ()):
            regions.append((iframe, header))
            try:
                _code, _prev, top = proc._frame_header(iframe)
            except Unreadable:
                continue
            if 0 < top < 100_000:
                regions.append((iframe + header + 8 * (top - 1), 8))
        return regions

    def document(self) -> dict:
        """What ``coro json`` prints inside gdb, from a running process, plus torn/vanished counts."""
        started = time.perf_counter()
        try:
            proc = self.process()
            records, counts = self.records(proc)
        except TargetGone:
            raise
        except Unreadable as exc:
            self._gone_check()
            raise CoroscopeError(f"pid {self.pid}: cannot read the interpreter state: {exc}") from None
        self._gone_check()
        tasks = [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]
        return {
            "format": "coroscope-bt/1",
            "python": "%d.%d" % self.version,
            "layout": self.layout.describe() + ", read by process_vm_readv",
            "live": True,
            "reader": "memory",
            "asyncio": bool(proc.asyncio_module),
            "threads": [{"ident": t["ident"], "native_id": t["native_id"]} for t in proc.threads],
            "tasks": tasks,
            "cycles": _format.cycles(tasks),
            "errors": proc.errors,
            "memory_reads": self.memory.reads,
            "torn": counts["torn"],
            "vanished": counts["vanished"],
            "retried": counts["retried"],
            "seconds": round(time.perf_counter() - started, 4),
        }


def collect_document(pid: int) -> dict:
    reader = Reader(pid)
    try:
        return reader.document()
    finally:
        reader.close()
