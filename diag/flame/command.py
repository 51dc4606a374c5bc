"""``coroscope flame``: record a profile and draw it; ``coroscope flame diff BASE NEW``: compare two.

Which sampler runs (``--backend auto``):
- cpu and wall mode without ``--by``: py-spy, from outside; nothing is injected, the target may be
  any CPython process (``--pid``) or a command we start (``-- CMD``).
- await mode, or ``--by task|request``: coroscope's in-process sampler. A command started with
  ``-- CMD`` gets it injected through sitecustomize; a running ``--pid`` started with it (its
  environment holds COROSCOPE_SAMPLER) is read from the cumulative file it keeps, as a
  difference of two snapshots.  Await mode (``--by task`` or ``--by request`` too) on any other
  running ``--pid`` reads the tasks from outside, with process_vm_readv (outside.py, 20 Hz by
  default), a task's request from its context.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from diag.errors import CoroscopeError, TargetGone
from diag.model.base import write_bytes_atomic, write_json_atomic, write_text_atomic
from diag.model.flame import MODES, FlameProfile
from diag.started import Output, failed, failure_note, stop_process

from . import fold, formats, pyspy
from .sampler import (ENV_MODE, ENV_PATH, ENV_RATE, SamplerData, SamplerFileError,
                      read_sampler_file, sampler_path)

EXTENSIONS = {"svg": ".svg", "html": ".html", "speedscope": ".speedscope.json",
              "collapsed": ".collapsed.txt", "json": ".json", "pprof": ".pb.gz"}
PROJECT_ROOT = Path(__file__).resolve().parents[2]
LEAD_BOOTSTRAP = PROJECT_ROOT / "diag" / "bootstrap"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.usage = ("coroscope flame [--pid PID | -- CMD ...] [options]\n"
                    "       coroscope flame diff BASE NEW [-o FILE] [--threshold POINTS]")
    parser.add_argument("words", nargs="*", metavar="CMD",
                        help="the command to run and profile (after --), or: diff BASE NEW")
    parser.add_argument("--pid", type=int, help="profile a running process")
    parser.add_argument("--worker", type=int, metavar="PID",
                        help="with --pid of a pre-fork master (gunicorn, uvicorn --workers, "
                             "hypercorn): this worker (default: py-spy samples every worker; the sampler, the first)")
    parser.add_argument("--duration", type=float,
                        help="seconds to sample (default: 10 for --pid, until the command exits)")
    parser.add_argument("--rate", type=float,
                        help="samples per second (100; 20 for await mode on a pid read from outside)")
    parser.add_argument("-o", "--output", help="output file (default: flame-MODE.EXT)")
    parser.add_argument("--format", choices=formats.FORMATS,
                        help="output format (default: from -o's extension, else svg)")
    parser.add_argument("--mode", choices=MODES, default="cpu",
                        help="cpu: on-CPU time; wall: all thread time; await: what pending tasks await")
    parser.add_argument("--by", choices=("request", "task"), help="one root per request or task")
    parser.add_argument("--keep-loop-frames", action="store_true",
                        help="do not fold the event loop's own frames into [event loop]")
    parser.add_argument("--backend", choices=("auto", "py-spy", "sampler"), default="auto")
    parser.add_argument("--blocking", action="store_true",
                        help="py-spy: pause the target for each sample (exact, slower)")
    parser.add_argument("--lines", action="store_true",
                        help="py-spy: label frames with the line running, not the function's "
                             "first line (more reads of the target per sample)")
    parser.add_argument("--threshold", type=float, metavar="POINTS",
                        help="diff: exit 1 when a function's share grew more than POINTS")
    parser.add_argument("--top", type=int, default=8, help="functions listed on the terminal")


def main(args: argparse.Namespace) -> int:
    if args.words[:1] == ["diff"] and args.pid is None:
        return _main_diff(args)
    if args.pid is not None and args.words:
        raise CoroscopeError("give either --pid PID or -- CMD, not both")
    if args.pid is None and not args.words:
        raise CoroscopeError("nothing to profile: give --pid PID or -- CMD")
    args.rate_given = args.rate is not None
    if not args.rate_given:
        args.rate = 100.0
    if args.rate <= 0 or args.rate > 10000:
        raise CoroscopeError("--rate must be between 0 and 10000 samples per second")
    if args.duration is not None and args.duration <= 0:
        raise CoroscopeError("--duration must be positive")
    fmt = output_format(args)
    output = args.output or f"flame-{args.mode}{EXTENSIONS[fmt]}"
    backend = choose_backend(args)
    if args.pid is not None:
        profile, problem = _profile_pid(args, backend)
    else:
        profile, problem = _profile_command(args, backend)
    write_profile(profile, fmt, output)
    _print(summary(profile, output, fmt, args.top))
    if problem:
        print(f"coroscope: error: {problem}; the profile so far is in {output}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------ choices

def output_format(args) -> str:
    if args.format:
        return args.format
    out = (args.output or "").lower()
    for fmt, ext in sorted(EXTENSIONS.items(), key=lambda kv: -len(kv[1])):
        if out.endswith(ext):
            return fmt
    if out.endswith((".txt", ".folded", ".collapsed")):
        return "collapsed"
    if out.endswith((".pprof", ".pb")):
        return "pprof"
    return "svg"


def choose_backend(args) -> str:
    needs_sampler = args.mode == "await" or args.by is not None
    if args.backend == "auto":
        return "sampler" if needs_sampler else "py-spy"
    if args.backend == "py-spy" and needs_sampler:
        raise CoroscopeError("py-spy sees threads, not tasks: --mode await and --by need "
                             "--backend sampler")
    return args.backend


# ------------------------------------------------------------------ recording

def _profile_pid(args, backend: str) -> tuple[FlameProfile, str | None]:
    pid = args.pid
    if not os.path.exists(f"/proc/{pid}"):
        raise TargetGone(f"no process with pid {pid}")
    duration = 10.0 if args.duration is None else args.duration
    from diag import workers
    found = workers.find(pid, args.worker)
    if backend == "py-spy" and found.pre_fork and args.worker is None:
        print(f"coroscope: {found.note}; py-spy samples them all", file=sys.stderr)
    elif found.pids[0] != pid or args.worker is not None:
        pid, note = workers.one(pid, args.worker)
        if note:
            print(f"coroscope: {note}", file=sys.stderr)
    target = f"pid {pid}"
    if backend == "py-spy":
        stop_at = time.monotonic() + duration
        res = pyspy.record(pid, None, rate=args.rate, idle=args.mode == "wall",
                           blocking=args.blocking, stop_when=lambda: time.monotonic() >= stop_at,
                           lines=args.lines, subprocesses=found.pre_fork and args.worker is None)
        profile = fold.profile_from_collapsed(
            res.stacks, args.mode, "py-spy", args.keep_loop_frames, rate_hz=args.rate,
            duration_s=round(res.elapsed, 3), target=target, complete=not res.target_exited)
        problem = None
        if res.target_exited:
            problem = f"pid {pid} exited after {res.elapsed:.1f} s of the {duration:g} s asked"
        return profile, problem

    template = _sampler_env_of(pid).get(ENV_PATH)
    if not template and args.mode == "await":
        return _profile_from_outside(args, pid, duration, target)
    if not template:
        raise CoroscopeError(
            f"{args.mode if args.mode == 'await' else '--by'} mode on pid {pid} needs coroscope's "
            f"in-process sampler, and pid {pid} was not started by coroscope (no {ENV_PATH} in its "
            f"environment): start it with `coroscope flame --mode {args.mode} -- CMD`")
    path = sampler_path(template, pid)
    before = _read_sampler(path, wait=3.0)
    start = time.monotonic()
    gone = False
    while time.monotonic() - start < duration:
        if not _alive(pid):
            gone = True
            break
        time.sleep(min(0.2, max(0.0, duration - (time.monotonic() - start))))
    time.sleep(1.1 if not gone else 0.0)     # one more periodic flush (every second) of the target
    after = _read_sampler(path, wait=0.0)
    window = after.minus(before)
    profile = _from_sampler(window, args, target)
    problem = None
    if gone:
        profile.complete = False
        problem = f"pid {pid} exited after {time.monotonic() - start:.1f} s of the {duration:g} s asked"
    return profile, problem


def _profile_from_outside(args, pid: int, duration: float, target: str):
    """Await mode on a pid coroscope did not start: its memory, read from outside (outside.py)."""
    from . import outside
    rate = args.rate if getattr(args, "rate_given", True) else 20.0
    res = outside.sample(pid, duration, rate, args.by)
    profile = fold.profile_from_collapsed(
        res["stacks"], "await", "memory", keep_loop_frames=True, rate_hz=rate,
        duration_s=round(res["elapsed"], 3), target=target, complete=not res["gone"])
    profile.by = args.by
    profile.notes.append(f"{res['samples']} samples read from outside (process_vm_readv); "
                         f"{res['torn']} torn chains left out")
    problem = None
    if res["gone"]:
        problem = f"pid {pid} exited after {res['elapsed']:.1f} s of the {duration:g} s asked"
    return profile, problem


def _profile_command(args, backend: str) -> tuple[FlameProfile, str | None]:
    cmd = list(args.words)
    target = shlex.join(cmd)
    with tempfile.TemporaryDirectory(prefix="coroscope-flame-") as tmp:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [_bootstrap_dir(tmp), str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        if backend == "sampler":
            env[ENV_PATH] = os.path.join(tmp, "sampler-{pid}.txt")
            env[ENV_RATE] = f"{args.rate:g}"
            env[ENV_MODE] = "await" if args.mode == "await" else args.mode
        output = Output()
        try:
            child = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=output.fileno(),
                                     stderr=output.fileno(), start_new_session=True)
        except OSError as exc:
            output.close()
            raise CoroscopeError(f"cannot run {cmd[0]}: {exc.strerror}") from None
        start = time.monotonic()
        stopped_by_us = False
        try:
            if backend == "py-spy":
                _wait_for_interpreter(child)
                stop_at = None if args.duration is None else start + args.duration
                res = pyspy.record(child.pid, None, rate=args.rate, idle=args.mode == "wall",
                                   blocking=args.blocking,
                                   stop_when=lambda: child.poll() is not None or
                                   (stop_at is not None and time.monotonic() >= stop_at),
                                   startup_grace=5.0, lines=args.lines)
                elapsed = res.elapsed
            else:
                while child.poll() is None:
                    if args.duration is not None and time.monotonic() - start >= args.duration:
                        break
                    time.sleep(0.05)
                elapsed = time.monotonic() - start
            if child.poll() is None:
                stopped_by_us = True
                _stop_child(child)
        except BaseException:
            _stop_child(child)
            output.close()
            raise
        status = child.wait()
        last_lines = output.tail()
        output.close()
        if backend == "py-spy":
            profile = fold.profile_from_collapsed(
                res.stacks, args.mode, "py-spy", args.keep_loop_frames, rate_hz=args.rate,
                duration_s=round(elapsed, 3), target=target)
        else:
            path = sampler_path(env[ENV_PATH], child.pid)
            if not os.path.exists(path):
                raise CoroscopeError(
                    f"the in-process sampler did not start in {cmd[0]} (is it a CPython 3.11 "
                    f"program? sitecustomize must be importable); no profile was written")
            profile = _from_sampler(_read_sampler(path, wait=0.0), args, target)
            profile.duration_s = round(elapsed, 3)
    problem = None
    if not stopped_by_us and failed(status):
        profile.complete = False
        problem = failure_note(cmd[0], status, None, elapsed)
        profile.notes.append(failure_note(cmd[0], status, last_lines, elapsed))
        if last_lines:
            print(failure_note(cmd[0], status, last_lines, elapsed), file=sys.stderr)
    return profile, problem


def _from_sampler(data: SamplerData, args, target: str) -> FlameProfile:
    try:
        return fold.profile_from_sampler(data, args.mode, args.by, args.keep_loop_frames, target)
    except ValueError as exc:
        raise CoroscopeError(str(exc)) from None


def _bootstrap_dir(tmp: str) -> str:
    """The sitecustomize directory for the target: the lead's bootstrap when it installs the
    sampler, else a two-line one of our own."""
    lead = LEAD_BOOTSTRAP / "sitecustomize.py"
    try:
        if "diag.flame.sampler" in lead.read_text():
            return str(LEAD_BOOTSTRAP)
    except OSError:
        pass
    own = Path(tmp) / "bootstrap"
    own.mkdir()
    (own / "sitecustomize.py").write_text(
        "from diag.flame.sampler import install_from_env\ninstall_from_env()\n")
    return str(own)


def _sampler_env_of(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise TargetGone(f"no process with pid {pid}") from None
    except PermissionError:
        raise CoroscopeError(f"cannot read the environment of pid {pid}: permission denied") from None
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def _read_sampler(path: str, wait: float) -> SamplerData:
    deadline = time.monotonic() + wait
    while True:
        try:
            return read_sampler_file(path)
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise CoroscopeError(f"the target's sampler file {path} does not exist") from None
            time.sleep(0.1)
        except SamplerFileError as exc:
            raise CoroscopeError(str(exc)) from None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _wait_for_interpreter(child: subprocess.Popen, timeout: float = 5.0) -> None:
    """Let the child exec and map CPython before py-spy looks for the interpreter."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        try:
            with open(f"/proc/{child.pid}/maps") as f:
                maps = f.read()
            exe = os.readlink(f"/proc/{child.pid}/exe")
        except OSError:
            maps, exe = "", ""
        if "libpython" in maps or "python" in os.path.basename(exe):
            time.sleep(0.2)
            return
        time.sleep(0.02)


# the sampler writes its file at exit: more grace for SIGINT than diag.started's default
FLAME_STOP_SIGNALS = ((signal.SIGINT, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0))


def _stop_child(child: subprocess.Popen) -> None:
    """SIGINT (so the program and the sampler's exit flush run), then SIGTERM, then SIGKILL."""
    stop_process(child, FLAME_STOP_SIGNALS)


# ------------------------------------------------------------------ output

def _print(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:          # `coroscope flame ... | head`: the file is written anyway
        sys.stdout = open(os.devnull, "w")

def write_profile(profile: FlameProfile, fmt: str, output: str) -> None:
    if fmt == "json":
        write_json_atomic(output, profile)
    elif fmt == "speedscope":
        import json
        write_text_atomic(output, json.dumps(formats.to_speedscope(profile)) + "\n")
    elif fmt == "collapsed":
        write_text_atomic(output, formats.to_collapsed(profile))
    elif fmt == "pprof":
        from . import pprof
        write_bytes_atomic(output, pprof.encode(profile))
    elif fmt == "html":
        write_text_atomic(output, formats.render_html(profile))
    else:
        write_text_atomic(output, formats.render_svg(profile))


def summary(profile: FlameProfile, output: str, fmt: str, top: int) -> str:
    total = profile.total()
    unit = "µs of CPU" if profile.unit == "microseconds" else "samples"
    head = (f"wrote {output} ({fmt}): {profile.mode} mode via {profile.backend}, "
            f"{total:,.0f} {unit} over {profile.duration_s or 0:.1f} s")
    lines = [head]
    if not total:
        lines.append("  (no samples: the target was idle or exited at once)")
        return "\n".join(lines)
    incl, self_w = profile.function_totals()
    lines.append(f"  {'self':>6} {'total':>6}  function")
    for fn, w in sorted(self_w.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * w / total:5.1f}% {100 * incl[fn] / total:5.1f}%  {fn}")
    lines.append("  hottest stacks (leaf last):")
    for st in sorted(profile.stacks, key=lambda st: -st.weight)[:3]:
        tail = " > ".join(formats.short_label(fr) for fr in st.frames[-4:])
        lines.append(f"  {100 * st.weight / total:5.1f}%  {'... > ' if len(st.frames) > 4 else ''}{tail}")
    if profile.by:
        roots = profile.roots()
        lines.append(f"  {len(roots)} {profile.by} roots; heaviest: " +
                     ", ".join(f"{r} {100 * w / total:.1f}%" for r, w in roots[:3]))
    lines.extend(f"  note: {n}" for n in profile.notes)
    return "\n".join(lines)


def _load(path: str) -> FlameProfile:
    if not os.path.exists(path):
        raise CoroscopeError(f"no such file: {path}")
    try:
        stacks = formats.read_stacks(path)
    except formats.FormatError as exc:
        raise CoroscopeError(str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CoroscopeError(f"{path}: not a profile ({exc})") from None
    if not stacks:
        raise CoroscopeError(f"{path}: the profile is empty")
    return fold.profile_from_collapsed(stacks, "cpu", "file", keep_loop_frames=True, target=path)


def _main_diff(args) -> int:
    from .diff import diff_profiles, format_table, render_diff

    if len(args.words) != 3:
        raise CoroscopeError("usage: coroscope flame diff BASE NEW")
    base_path, new_path = args.words[1], args.words[2]
    base, new = _load(base_path), _load(new_path)
    d = diff_profiles(base, new, base_path, new_path, args.threshold)
    fmt = output_format(args)
    output = args.output or "flame-diff.svg"
    if fmt == "json":
        write_json_atomic(output, d)
    elif fmt in ("svg", "html"):
        title = f"coroscope differential flame graph: {new_path} vs {base_path} (red grew, blue shrank)"
        write_text_atomic(output, render_diff(base, new, fmt, title))
    else:
        raise CoroscopeError("flame diff writes svg, html or json")
    print(f"wrote {output} ({fmt}); shares in percentage points, {new_path} minus {base_path}")
    print(format_table(d, limit=args.top))
    return 1 if d.failed else 0
