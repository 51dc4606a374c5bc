"""The in-process sampler: a daemon thread inside the target that records where time goes.

Why in-process at all, when py-spy exists? py-spy sees threads, not tasks: it cannot tell which
task or request a thread is running, and it never sees a suspended coroutine (the time a request
spends awaiting is charged to nobody, py-spy #105). A thread inside the target can read
``sys._current_frames()`` for the threads, the current task of each running loop, and every
pending task's await chain.

How it stays cheap and honest:
- one daemon thread wakes at ``rate`` Hz on average (deadline-based, so a slow sample does not
  drift the rate; each period jittered by +-50% so that a program working in fixed rounds is not
  always caught at the same phase of its round), takes the GIL briefly, and folds what it sees into a dict keyed by (kind, task,
  request, stack) -> (samples, cpu microseconds). Frame labels are cached per (code, line).
- cpu weight: the CPU time each thread used since the previous sample
  (``pthread_getcpuclockid``), charged to the stack it is in now. A thread blocked in
  ``epoll_wait`` used no CPU and is charged nothing, so cpu mode needs no guess at "idle".
- the aggregate is rewritten whole and atomically (temp file + rename) every ``flush_s`` and at
  exit, so a reader never sees half a file, and a target killed mid-run leaves the profile
  up to its last flush. Counts are cumulative since start: a reader that wants a window takes
  two snapshots and subtracts (that is how ``coroscope flame --pid`` reads a running target).
- the GIL: the sampler must hold it to read frames, and waits for it up to the switch interval
  (5 ms by default). Meanwhile the running thread often releases it voluntarily, in the loop's
  poll, so with the default interval samples pile up at the moment the loop polls and miss the
  code that ran just before (measured: 33% of CPU charged to an idle loop that used 2%). So while
  it runs the sampler lowers the switch interval to 0.2 ms (COROSCOPE_SAMPLER_SWITCH_INTERVAL; 0
  keeps the program's own) and restores it at stop: a sample then lands within 0.2 ms of when it
  was due. The cost: programs whose own threads contend for the GIL switch more often.
- a sample that still lands in the loop's poll (the thread is inside a C call made from a
  loop-machinery frame, blocked) charges no CPU there: the CPU used since the previous sample
  was spent before the poll, so it is carried to the thread's next sample that lands in code.
- otherwise it never changes what the program does: no signal handlers, no monkey-patching.

File format (one header line, then one line per distinct key; tab separated):

    # coroscope-sampler 1 pid=<pid> rate=<hz> mode=<cpu|wall|await> samples=<n> final=<0|1>
      elapsed=<s> self_cpu=<CPU s of the sampler thread> gil_held=<s spent sampling>  (one line)
    <kind>\\t<task>\\t<request>\\t<samples>\\t<cpu_us>\\t<frame;frame;...>

``kind`` is ``thread`` (a thread's Python stack) or ``await`` (a pending task's await chain,
outermost coroutine first). ``task``/``request`` are ``-`` when unknown. Frames are
``function (path:line)`` like py-spy's raw output; ``;`` and tabs in them are replaced.

Environment (read by :func:`install_from_env`, called from coroscope's sitecustomize):
    COROSCOPE_SAMPLER=path        turn the sampler on; ``{pid}`` in the path is replaced by the
                                  pid, so child processes do not overwrite their parent's file
    COROSCOPE_SAMPLER_RATE=100    samples per second
    COROSCOPE_SAMPLER_MODE=cpu    ``await`` also records every pending task's await chain
    COROSCOPE_SAMPLER_SWITCH_INTERVAL=0.0002   sys.setswitchinterval while sampling (0: leave it)
"""
from __future__ import annotations

import atexit
import dis
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field

from .awaits import await_chains, current_task_by_thread

FORMAT_VERSION = 1
ENV_PATH = "COROSCOPE_SAMPLER"
ENV_RATE = "COROSCOPE_SAMPLER_RATE"
ENV_MODE = "COROSCOPE_SAMPLER_MODE"
ENV_SWITCH = "COROSCOPE_SAMPLER_SWITCH_INTERVAL"
DEFAULT_SWITCH_INTERVAL = 0.0002

# Where a blocked loop sits: a C call (the poll) made from one of these files.
_LOOP_POLL_FILES = (f"{os.sep}selectors.py", f"{os.sep}asyncio{os.sep}base_events.py",
                    f"{os.sep}asyncio{os.sep}runners.py", f"{os.sep}uvloop{os.sep}",
                    f"{os.sep}runtime{os.sep}")
_CALL_OPCODES = frozenset(dis.opmap[name] for name in ("CALL", "PRECALL") if name in dis.opmap)
NONE = "-"
_LABEL_CACHE_MAX = 50_000          # the cache keeps code objects alive: bound it

_installed: "Sampler | None" = None


def sampler_path(template: str, pid: int | None = None) -> str:
    return template.replace("{pid}", str(os.getpid() if pid is None else pid))


def _clean(text: str) -> str:
    return text.replace(";", ":").replace("\t", " ").replace("\n", " ")


class _Labels:
    """``function (path:line)`` per frame position, built once: labelling is most of a sample.

    Two costs are avoided. ``f_lineno`` decodes the code's line table on every access (slow
    in big functions such as the loop's ``_run_once``), so the key is the instruction offset
    ``f_lasti`` and the line is computed only on a miss. And the code object is looked up by
    ``id``: hashing a code object hashes its bytecode, constants and names each time. The entry
    keeps the code object alive, so its id cannot be reused while the entry exists.
    """

    def __init__(self):
        self._cache: dict[int, tuple[object, dict[int, str]]] = {}

    def __call__(self, frame) -> str:
        code = frame.f_code
        entry = self._cache.get(id(code))
        if entry is None or entry[0] is not code:
            if len(self._cache) >= _LABEL_CACHE_MAX:   # code made by exec() again and again
                self._cache.clear()
            entry = self._cache[id(code)] = (code, {})
        lasti = frame.f_lasti
        label = entry[1].get(lasti)
        if label is None:
            label = entry[1][lasti] = _clean(
                f"{code.co_name} ({code.co_filename}:{frame.f_lineno or 0})")
        return label

    def stack(self, frame) -> tuple[str, ...]:
        out = []
        while frame is not None:
            out.append(self(frame))
            frame = frame.f_back
        out.reverse()
        return tuple(out)


class Sampler:
    """Samples this process's threads (and, in await mode, its tasks) from a daemon thread."""

    def __init__(self, path: str, rate: float = 100.0, mode: str = "cpu", flush_s: float = 1.0,
                 request_of=None, switch_interval: float | None = DEFAULT_SWITCH_INTERVAL):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.path = path
        self.rate = float(rate)
        self.mode = mode
        self.flush_s = flush_s
        # request_of(thread_ident, task) -> request id or None; see _default_request_lookup
        self.request_of = request_of or _default_request_lookup()
        self.samples = 0                     # sampling rounds taken
        self.own_cpu_s = 0.0                 # CPU the sampler thread itself used (incl. GIL waits)
        self.gil_held_s = 0.0                # wall time spent sampling with the GIL held: the
                                             # time a single-threaded loop could not run
        # (kind, task, request, stack) -> [samples, cpu_us]
        self.counts: dict[tuple[str, str, str, tuple[str, ...]], list[float]] = {}
        self._labels = _Labels()
        self._cpu_ns: dict[int, int] = {}    # thread ident -> CPU time at the previous sample
        self._carried_us: dict[int, float] = {}  # thread ident -> CPU not yet charged (see essay)
        self._poll_code: dict[int, tuple] = {}   # id(code) -> (code, is it loop machinery that polls)
        self.switch_interval = switch_interval or None
        self._saved_switch: float | None = None
        self._lock = threading.Lock()        # guards counts/samples against the flush at exit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()

    # -- lifecycle --
    def start(self) -> "Sampler":
        self._started = time.monotonic()
        if self.switch_interval:
            self._saved_switch = sys.getswitchinterval()
            sys.setswitchinterval(min(self._saved_switch, self.switch_interval))
        self._thread = threading.Thread(target=self._run, name="coroscope-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self, final: bool = True) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        if self._saved_switch is not None:
            sys.setswitchinterval(self._saved_switch)
            self._saved_switch = None
        self.flush(final=final)

    def _run(self) -> None:
        interval = 1.0 / self.rate
        next_sample = time.monotonic() + interval
        next_flush = time.monotonic() + self.flush_s
        me = threading.get_ident()
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_sample:
                # time.sleep, not Event.wait: cheaper to wake from (no Python-level lock
                # juggling); stop() waits at most one period for the loop to see the flag
                time.sleep(next_sample - now)
                continue
            # jittered period (mean 1/rate): a program that works in rounds of exactly 10 ms
            # must not be sampled at the same phase of every round (aliasing)
            next_sample += interval * (0.5 + random.random())
            if next_sample < now:            # fell behind (a long GIL hold): do not burst
                next_sample = now + interval
            t0 = time.perf_counter()
            try:
                self.sample_once(exclude=me)
            except Exception:                 # never let a sampling hiccup kill the target
                pass
            if now >= next_flush:
                next_flush = now + self.flush_s
                try:
                    self.flush(final=False)
                except OSError:
                    pass
            self.gil_held_s += time.perf_counter() - t0
            self.own_cpu_s = time.thread_time()

    # -- one sample --
    def sample_once(self, exclude: int | None = None) -> None:
        frames = sys._current_frames()
        if len(self._cpu_ns) > len(frames) + 16:      # forget threads that have ended
            for ident in [i for i in self._cpu_ns if i not in frames]:
                self._cpu_ns.pop(ident, None)
                self._carried_us.pop(ident, None)
        tasks = current_task_by_thread()
        add = self._add
        stack_of_task: dict[object, tuple[str, ...]] = {}    # running task -> its thread's stack
        for ident, frame in frames.items():
            if ident == exclude:
                continue
            cpu_us = self._cpu_delta_us(ident) + self._carried_us.pop(ident, 0.0)
            if cpu_us and self._blocked_in_loop(frame):
                self._carried_us[ident] = cpu_us
                cpu_us = 0.0
            task = tasks.get(ident)
            task_name = _clean(task.get_name()) if task is not None else NONE
            request = self.request_of(ident, task)
            stack = self._labels.stack(frame)
            if task is not None:
                stack_of_task[task] = stack
            add("thread", task_name, NONE if request is None else _clean(str(request)),
                stack, cpu_us)
        if self.mode == "await":
            for task, chain in await_chains(self._labels):
                if chain[-1] == "[running]" and task in stack_of_task:
                    chain = _with_running_tail(chain, stack_of_task[task])
                request = self.request_of(None, task)
                add("await", _clean(task.get_name()), NONE if request is None else _clean(str(request)),
                    chain, 0.0)
        with self._lock:
            self.samples += 1
        del frames

    def _add(self, kind, task, request, stack, cpu_us) -> None:
        key = (kind, task, request, stack)
        with self._lock:
            slot = self.counts.get(key)
            if slot is None:
                self.counts[key] = [1, cpu_us]
            else:
                slot[0] += 1
                slot[1] += cpu_us

    def _blocked_in_loop(self, frame) -> bool:
        """Is the thread inside a C call (the poll) made from the loop's own code?"""
        code = frame.f_code
        entry = self._poll_code.get(id(code))
        if entry is None or entry[0] is not code:
            if len(self._poll_code) >= _LABEL_CACHE_MAX:
                self._poll_code.clear()
            entry = self._poll_code[id(code)] = (
                code, any(p in code.co_filename for p in _LOOP_POLL_FILES))
        is_loop = entry[1]
        if not is_loop:
            return False
        try:
            return code.co_code[frame.f_lasti] in _CALL_OPCODES
        except IndexError:
            return False

    def _cpu_delta_us(self, ident: int) -> float:
        try:
            now = time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
        except (OSError, OverflowError, ValueError):
            return 0.0
        before = self._cpu_ns.get(ident)
        self._cpu_ns[ident] = now
        return 0.0 if before is None else max(0, now - before) / 1000.0

    # -- output --
    def render(self, final: bool) -> str:
        with self._lock:
            items = list(self.counts.items())
            samples = self.samples
        elapsed = time.monotonic() - self._started
        lines = [f"# coroscope-sampler {FORMAT_VERSION} pid={os.getpid()} rate={self.rate:g} "
                 f"mode={self.mode} samples={samples} final={int(final)} elapsed={elapsed:.3f} "
                 f"self_cpu={self.own_cpu_s:.4f} gil_held={self.gil_held_s:.4f}"]
        for (kind, task, request, stack), (n, cpu_us) in items:
            lines.append(f"{kind}\t{task}\t{request}\t{n}\t{cpu_us:.0f}\t{';'.join(stack)}")
        return "\n".join(lines) + "\n"

    def flush(self, final: bool = False) -> None:
        text = self.render(final)
        directory = os.path.dirname(self.path) or "."
        tmp = os.path.join(directory, f".{os.path.basename(self.path)}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.path)


def _with_running_tail(chain: tuple[str, ...], thread_stack: tuple[str, ...]) -> tuple[str, ...]:
    """A running task's chain ends in its innermost coroutine frame, which is also on its
    thread's stack: continue the chain with what that frame is calling now (f, then _burn...),
    so await mode shows what a running task does, not just ``[running]``."""
    innermost = chain[-2] if len(chain) >= 2 else None
    for i in range(len(thread_stack) - 1, -1, -1):
        if thread_stack[i] == innermost:
            return chain[:-1] + thread_stack[i + 1:] + ("[running]",)
    return chain


def _default_request_lookup():
    """``request_of(thread_ident, task)``: the request a task or thread is serving, or None.

    The runtime keeps the current request in a ContextVar (``runtime.requests.REQUEST_ID``). A
    task's context is not exposed in Python 3.11, but the garbage collector's referents of a
    task include it, so the request of any task (running or suspended) can be read from here.
    A thread running a plain callback (a protocol's ``data_received``) has no task; its request
    is in the thread's probe-file slot, which the tracer fills while tracing is on.
    Nothing is imported: when the program never imported ``runtime.requests`` there are no
    requests to find.
    """
    import contextvars
    import gc

    def request_of(ident, task):
        requests = sys.modules.get("runtime.requests")
        if requests is None:
            return None
        var = requests.REQUEST_ID
        if task is not None:
            for ref in gc.get_referents(task):
                if isinstance(ref, contextvars.Context):
                    rid = ref.get(var, 0)
                    if rid:
                        return rid
        if ident is not None:
            return _request_from_probe_slot(ident)
        return None

    return request_of


def _request_from_probe_slot(ident: int):
    tracing = sys.modules.get("runtime.tracing")
    probefile = sys.modules.get("runtime.probefile")
    if tracing is None or probefile is None:
        return None
    try:
        writer = tracing.writer()
        if writer is None:
            return None
        for _i, _tid, _task, request, _start, slot_ident, _steps in probefile.read_slots(
                writer.mm, writer.layout):
            if slot_ident == ident:
                return request or None
    except Exception:       # the layout changed under us: requests unknown, sampling goes on
        return None
    return None


# -- parsing the file (used by the collector, outside the target) --

@dataclass
class SamplerData:
    pid: int
    rate: float
    mode: str
    samples: int
    final: bool                     # False: the target did not get to its exit flush
    elapsed: float
    self_cpu: float = 0.0           # CPU seconds the sampler thread used (its direct cost)
    gil_held: float = 0.0           # seconds it spent sampling, holding the GIL
    # (kind, task, request, stack) -> (samples, cpu_us)
    counts: dict[tuple[str, str, str, tuple[str, ...]], tuple[float, float]] = field(default_factory=dict)

    def minus(self, earlier: "SamplerData") -> "SamplerData":
        """What was sampled between ``earlier`` and this snapshot (counts are cumulative)."""
        out: dict = {}
        for key, (n, cpu) in self.counts.items():
            n0, cpu0 = earlier.counts.get(key, (0, 0.0))
            if n - n0 > 0:
                out[key] = (n - n0, max(0.0, cpu - cpu0))
        return SamplerData(pid=self.pid, rate=self.rate, mode=self.mode,
                           samples=self.samples - earlier.samples, final=self.final,
                           elapsed=self.elapsed - earlier.elapsed,
                           self_cpu=self.self_cpu - earlier.self_cpu,
                           gil_held=self.gil_held - earlier.gil_held, counts=out)


class SamplerFileError(ValueError):
    pass


def read_sampler_file(path: str) -> SamplerData:
    with open(path, encoding="utf-8") as f:
        header = f.readline()
        if not header.startswith("# coroscope-sampler "):
            raise SamplerFileError(f"{path} is not a coroscope sampler file")
        parts = header.split()
        try:
            version = int(parts[2])
            meta = dict(p.split("=", 1) for p in parts[3:])
        except (IndexError, ValueError) as exc:
            raise SamplerFileError(f"{path}: bad header: {header.strip()!r}") from exc
        if version != FORMAT_VERSION:
            raise SamplerFileError(f"{path}: sampler format {version}, expected {FORMAT_VERSION}")
        data = SamplerData(pid=int(meta.get("pid", 0)), rate=float(meta.get("rate", 0)),
                           mode=meta.get("mode", "cpu"), samples=int(meta.get("samples", 0)),
                           final=meta.get("final") == "1", elapsed=float(meta.get("elapsed", 0)),
                           self_cpu=float(meta.get("self_cpu", 0)),
                           gil_held=float(meta.get("gil_held", 0)))
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != 6:
                raise SamplerFileError(f"{path}:{lineno}: expected 6 tab-separated fields")
            kind, task, request, n, cpu, stack = fields
            key = (kind, task, request, tuple(stack.split(";")) if stack else ())
            data.counts[key] = (float(n), float(cpu))
        return data


# -- installation from the environment --

def install_from_env(environ=None) -> "Sampler | None":
    """Start the sampler when COROSCOPE_SAMPLER is set; do nothing (and import nothing) otherwise."""
    global _installed
    env = os.environ if environ is None else environ
    template = env.get(ENV_PATH)
    if not template or _installed is not None:
        return _installed
    try:
        rate = float(env.get(ENV_RATE) or 100)
    except ValueError:
        rate = 100.0
    mode = env.get(ENV_MODE) or "cpu"
    try:
        switch = float(env.get(ENV_SWITCH) or DEFAULT_SWITCH_INTERVAL)
    except ValueError:
        switch = DEFAULT_SWITCH_INTERVAL
    sampler = Sampler(sampler_path(template), rate=rate, mode=mode, switch_interval=switch)
    _installed = sampler.start()
    atexit.register(_stop_installed)
    if not getattr(install_from_env, "_fork_hook", False):
        os.register_at_fork(after_in_child=lambda: _after_fork_in_child(env))
        install_from_env._fork_hook = True
    return sampler


def _stop_installed() -> None:
    if _installed is not None:
        _installed.stop()


def _after_fork_in_child(env) -> None:
    """A forked child (a worker) has no sampler thread, and must never flush its parent's counts
    over the parent's file: it forgets the parent's sampler and starts its own, writing to the
    path for its own pid (when the path has ``{pid}``; otherwise it is not sampled)."""
    global _installed
    _installed = None
    if "{pid}" in (env.get(ENV_PATH) or ""):
        install_from_env(env)
