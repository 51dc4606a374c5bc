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
from .vmread import IOV_MAX, PAGE, ProcessMemory, Unreadable

RETRIES = 3
GENERATOR_KINDS = ("coroutine", "generator", "async_generator")
MAX_REFCNT = 1 << 40
MAX_STACK_SLOTS = 100_000    # as the walk: a frame with a deeper stack is not believed

_layouts = layer.module("coroscope_layouts")
_debug_offsets = layer.module("coroscope_debug_offsets")
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
            raise CoroscopeError(f"pid {pid}: not a Python process: no _PyRuntime symbol in the "
                                 "program or its libraries")
        if "Py_Version" not in found:            # before 3.11: named by its file, as gdb's path does
            raise CoroscopeError(f"pid {pid}: {_unsupported_by_name(pid)}")
        self.runtime = found["_PyRuntime"]
        self.memory = ProcessMemory(pid)
        try:
            hexversion = self.memory.u32(found["Py_Version"])
        except Unreadable:
            raise CoroscopeError(f"pid {pid}: cannot read Py_Version") from None
        self.version = (hexversion >> 24, (hexversion >> 16) & 0xFF)
        try:
            self.layout = _layouts.load(self.version)
            # 3.13+: the offsets the interpreter publishes, checked before anything is read
            self.layout.published = _debug_offsets.check(
                self.memory.read, self.runtime, _layouts.table_for(self.version), self.layout.off)
        except (_layouts.UnsupportedVersion, _debug_offsets.Mismatch) as exc:
            raise CoroscopeError(f"pid {pid}: {exc}") from None
        except Unreadable:
            raise CoroscopeError(f"pid {pid}: cannot read _PyRuntime") from None
        self.objects = None

    def close(self) -> None:
        self.memory.close()

    # -- one snapshot --------------------------------------------------------------------

    def process(self):
        """A fresh ``coroscope_tasks.Process`` over memory as it is now."""
        for attempt in range(RETRIES + 1):
            self.memory.new_snapshot()
            _tasks.reset_caches()
            objects = self._objects()
            try:
                proc = _tasks.Process(objects, self.runtime, live=True)
                break
            except Unreadable as exc:
                # The interpreter's own lists (threads, the running-tasks dict, the loop's
                # sets) move while the target runs; a read caught mid-change is taken again.
                self._gone_check()
                if attempt == RETRIES:
                    raise CoroscopeError(f"pid {self.pid}: cannot read the interpreter state "
                                         f"after {RETRIES} re-reads: {exc}") from None
        proc.layout = self.layout
        return proc

    def _objects(self):
        """The object reader, keeping what it learnt about types from one snapshot to the next.

        A sampler reads the same process 20 times a second; looking up a class's slots and MRO
        again each time was most of a small snapshot's cost, and the longer a snapshot takes
        the more of it races with the target.  Types live as long as their classes, so what is
        known about a type is kept (bounded); strings, which come and go, are not.
        """
        if self.objects is None or len(self.objects._type_info) > 50_000:
            self.objects = _objects.Objects(self.memory, self.layout)
        else:
            self.objects._str_cache.clear()
        return self.objects

    def _gone_check(self) -> None:
        if not os.path.exists(f"/proc/{self.pid}"):
            raise TargetGone(f"process {self.pid} exited while its memory was being read")

    def records(self, proc) -> tuple[list[dict], dict]:
        """(task records, counts), every record checked against fresh memory.

        All tasks are read first (through the page cache), then every byte their records came
        from is read again in a few large process_vm_readv calls; only tasks whose bytes moved
        are read again, at most ``RETRIES`` times.
        """
        counts = {"torn": 0, "vanished": 0, "retried": 0}
        done: dict[int, dict] = {}
        pending = proc.task_addresses()
        order = {t: i for i, t in enumerate(pending)}
        last: dict[int, dict] = {}
        for attempt in range(RETRIES + 1):
            built = {}
            for task in pending:
                if not self._is_live_task(proc, task):
                    counts["vanished"] += 1
                    continue
                built[task] = proc.task_record(task)
            stale = self._stale(proc, built)
            stale.update(t for t, rec in built.items() if not self._plausible(rec, attempt))
            for task, rec in built.items():
                if task not in stale:
                    done[task] = rec
                else:
                    last[task] = rec
            if not stale:
                break
            counts["retried"] += len(stale)
            # Re-read from scratch: a page cached early in the walk is what went stale, and the
            # allocator reuses addresses at once, so a look-alike may sit where the old object was.
            self.memory.new_snapshot()
            proc.forget_snapshot()
            pending = sorted(stale, key=order.get)
        else:
            for task in pending:
                if task in done or task not in last:
                    continue
                counts["torn"] += 1
                done[task] = {"id": task, "address": f"{task:#x}", "name": last[task].get("name", ""),
                              "state": "torn", "frames": [], "awaiting": {"kind": "torn"},
                              "error": f"still changing after {RETRIES} re-reads"}
        out = [done[t] for t in sorted(done, key=order.get)]
        proc._add_holders(out)
        return out, counts

    def _stale(self, proc, built: dict) -> set[int]:
        """Tasks any of whose regions differ between the cached read and memory now, or that are
        no longer alive now (a freed task keeps its old fields; only its first word changes, to
        the allocator's free-list link, so its reference count is checked afresh).

        First every page the snapshot read is read again (a few MB, a few system calls): when
        none changed, as in a process whose tasks all wait, no task can be stale and no region
        is worked out.  Otherwise only the regions on a changed page are compared (all of them
        when the snapshot could not be held in pages), a system call's worth at a time
        (IOV_MAX regions): equal, as nearly all are, settles every task in it at once; only a
        chunk that differs is looked at region by region.
        """
        changed = self.memory.changed_pages()
        if changed is not None and not changed:
            return set()
        mask = ~(PAGE - 1)

        def touches(a: int, n: int) -> bool:
            return changed is None or any(b in changed for b in range(a & mask, a + max(n, 1), PAGE))

        stale = set()
        tasks = [t for t in built if touches(t, 8)]
        for task, current in zip(tasks, self.memory.fresh_many([(t, 8) for t in tasks])):
            if current is None or not 0 < int.from_bytes(current, "little") < MAX_REFCNT:
                stale.add(task)
        flat = [(task, a, n) for task, rec in built.items()
                for a, n in self._regions(proc, task, rec) if touches(a, n)]
        regions = [(a, n) for _t, a, n in flat]
        read, cached_concat = self.memory.read, self.memory.cached_concat
        for i, now in self.memory.fresh_chunks(regions):
            try:
                cached = cached_concat(regions[i:i + IOV_MAX])
            except Unreadable:
                cached = None
            if now is not None and cached == now:
                continue
            at = 0
            for task, a, n in flat[i:i + IOV_MAX]:
                if now is not None:
                    current = now[at:at + n]
                else:
                    current = self.memory.fresh_many([(a, n)])[0]
                at += n
                try:
                    if current is None or read(a, n) != current:
                        stale.add(task)
                except Unreadable:
                    stale.add(task)
        return stale

    @staticmethod
    def _plausible(rec: dict, attempt: int) -> bool:
        """False for a record no suspended task can have: read again.

        A task that is not done always has at least its coroutine's frame; none means the
        coroutine had just returned (or was running) while the task's fields still said
        pending: the loop was in the middle of stepping it, or the walk met an object that
        changed under it.  Such a record is never kept: after the last re-read it is torn.  An
        unreadable object further down a chain is read again too, but kept as gdb would show it
        (the frames read, and the error) once every re-read agrees.
        """
        if rec.get("state") not in ("done", "cancelled") and not rec.get("frames"):
            return False
        return "error" not in rec or attempt == RETRIES

    def _is_live_task(self, proc, task: int) -> bool:
        try:
            refcnt = self.memory.u64(task)
            return 0 < refcnt < MAX_REFCNT and proc.is_task(task)
        except Unreadable:
            return False

    def _regions(self, proc, task: int, rec: dict) -> list[tuple[int, int]]:
        """(address, size) of the bytes this record was built from: what must not have changed.

        The task's own fields; the type of its coroutine; for every frame of the chain the fixed
        part of the frame and the slot holding what it awaits, and for a coroutine's or
        generator's frame the object's type and frame state (a freed coroutine whose memory now
        holds something else changes there first); the type of what each frame awaits and of
        the leaf.  A suspended generator's frame changes only when it runs, so its type, state,
        fixed part, locals and stack up to the awaited slot are one region; and the type of an
        object awaited is not asked for again when that object is the next frame's generator,
        whose region starts at its type.  Fewer, larger regions: the check is one comparison per
        region, and 10,000 tasks made 110,000 of them.
        """
        o = self.layout.off
        type_at = o["PyObject.ob_type"]
        # From ob_type on: the reference count moves whenever anything touches the task.
        end = max(o["TaskObj.task_num_cancels_requested"] + 4, o["TaskObj.task_name"] + 8,
                  o["TaskObj.task_context"] + 8)     # 3.13 moved the count before the pointers
        regions = [(task + type_at, end - type_at)]
        u64 = self.memory.u64
        if "request" in rec:             # the context's mapping: a new one when the var is set
            try:
                context = u64(task + o["TaskObj.task_context"])
                regions.append((context + o["PyContext.ctx_vars"], 8))
            except Unreadable:
                pass
        frames = rec.get("frames") or ()
        try:
            coro = u64(task + o["TaskObj.task_coro"])
            if coro and (not frames or frames[0].get("kind") not in GENERATOR_KINDS):
                regions.append((coro + type_at, 8))      # else its frame's region covers it
                regions.append((coro + o["PyGenObject.gi_frame_state"], 1))
        except Unreadable:
            pass
        header = o["_PyInterpreterFrame.localsplus"]
        gi_iframe = o["PyGenObject.gi_iframe"]
        covered = set()          # objects whose type a region below already holds
        typed = []               # objects whose type must be held
        for frame, iframe in zip(frames, rec.get("_iframes", ())):
            suspended = frame.get("kind") in GENERATOR_KINDS
            start = iframe - gi_iframe + type_at if suspended else iframe
            if suspended:
                covered.add(iframe - gi_iframe)
            end = iframe + header
            try:
                _code, _prev, top = proc._frame_header(iframe)
            except Unreadable:
                top = 0
            if 0 < top < MAX_STACK_SLOTS:
                slot = iframe + header + 8 * (top - 1)
                if suspended:
                    end = slot + 8
                else:
                    regions.append((slot, 8))
                try:
                    awaited = u64(slot)
                    if awaited:
                        typed.append(awaited)
                except Unreadable:
                    pass
            regions.append((start, end - start))
        leaf = rec.get("awaiting", {}).get("future")
        if isinstance(leaf, str) and leaf.startswith("0x"):
            typed.append(int(leaf, 16))
        for obj in dict.fromkeys(typed):
            if obj not in covered:
                regions.append((obj + type_at, 8))
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
        for r in records:
            r.pop("_iframes", None)           # the walk's own addresses, not the document's
        tasks = records
        return {
            "format": "coroscope-bt/1",
            "python": "%d.%d" % self.version,
            "layout": self.layout.describe() + ", read by process_vm_readv",
            "runtime": f"{self.runtime:#x}",
            "debug_offsets_agreeing": self.layout.published,
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


def _unsupported_by_name(pid: int) -> str:
    """One line for an interpreter with no Py_Version (CPython before 3.11): its version read
    from the name of its executable or libpython."""
    import re
    names = []
    try:
        names.append(os.readlink(f"/proc/{pid}/exe"))
        with open(f"/proc/{pid}/maps") as f:
            names += [line.rsplit(" ", 1)[-1] for line in f if "python" in line]
    except OSError:
        pass
    for name in names:
        m = re.search(r"python(\d)\.(\d+)", os.path.basename(name))
        if m:
            return (f"CPython {m.group(1)}.{m.group(2)} is not supported "
                    f"(supported: {_layouts.supported_text()})")
    return f"not CPython 3.11 or later (supported: {_layouts.supported_text()})"


def python_version(pid: int) -> tuple[int, int] | None:
    """(major, minor) of the CPython a live process runs, from its Py_Version; None when it
    cannot be told (not CPython 3.11+, gone, or not ours to read). Reads memory only."""
    try:
        found = symbols.find(pid)
        if "Py_Version" not in found:
            return None
        memory = ProcessMemory(pid)
        try:
            hexversion = memory.u32(found["Py_Version"])
        finally:
            memory.close()
    except (OSError, CoroscopeError, Unreadable):
        return None
    return hexversion >> 24, (hexversion >> 16) & 0xFF


def version_fact(version: tuple[int, int] | None, name: str):
    """A constant of the layout table of ``version`` (``GET_RUNNING_LOOP_GETPID``...), None when
    the version is unknown or has no table: the one place a version's facts are looked up."""
    if version is None:
        return None
    try:
        return _layouts.table_for(tuple(version)).CONSTANTS.get(name)
    except _layouts.UnsupportedVersion:
        return None
