"""``coroscope leaks``: run a workload in cycles and report what grows.

    coroscope leaks [--cycles N] [--warmup K] [--json] [--out FILE] [--loop L]
                    [--ignore-kind KIND]... [--ignore-frame TEXT]... -- TARGET [ARGS...]

What a cycle is (the contract):

* Cycle mode, when TARGET is ``file.py``, ``file.py:function`` or ``package.module:function``
  (function defaults to ``cycle``, sync or async). coroscope starts a child Python process it
  controls, installs fd tracking, imports the module, calls its optional ``setup()``, calls the
  function K warm-up times, takes a baseline, calls it N times sampling fds by kind, threads,
  child processes and pending asyncio tasks after each, then calls ``teardown()``. Async
  functions all run on one loop (``--loop asyncio|runtime|uvloop``), so pending tasks are seen.
  Leaked fds, threads, processes and tasks come with the file:line that opened them.
* Command mode, for anything else: the whole command is run to completion K + N times, with
  coroscope as a child subreaper; what grows is processes the command left running (orphans
  reparented to coroscope). Nothing inside the command is visible from outside once it exits,
  so fd leaks need cycle mode.

Exit status: 0 no leak, 1 leaks found, 2 bad input (one line on stderr).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from diag.errors import CoroscopeError
from diag.model.base import to_jsonable, write_json_atomic
from diag.model.fds import LeakReport, leak_report_from_dict

from .cycle_child import EXIT_BAD_TARGET, is_cycle_target

PR_SET_CHILD_SUBREAPER = 36


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cycles", type=int, default=10, help="measured cycles (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up cycles before the baseline (default 2)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", help="also write the JSON report to this file")
    parser.add_argument("--loop", choices=("asyncio", "runtime", "uvloop"), default=None,
                        help="event loop for async cycle functions (default asyncio)")
    parser.add_argument("--ignore-kind", action="append", default=[], metavar="KIND",
                        help="ignore a kind (eventfd, tcp, socket, fd, thread, process, task...)")
    parser.add_argument("--ignore-frame", action="append", default=[], metavar="TEXT",
                        help="ignore items whose opening stack has a frame containing TEXT (file:line in function)")
    parser.add_argument("--retry-timeout", type=float, default=1.0,
                        help="seconds to keep retaking the final sample while it shows leaks (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on the workload after this many seconds")
    parser.add_argument("target", nargs=argparse.REMAINDER, help="-- TARGET [ARGS...]")


def main(args: argparse.Namespace) -> int:
    target = list(args.target)
    if target and target[0] == "--":
        target = target[1:]
    if not target:
        raise CoroscopeError("nothing to run: coroscope leaks [options] -- file.py[:function] | module:function | command...")
    if args.cycles < 1 or args.warmup < 0:
        raise CoroscopeError("--cycles must be at least 1 and --warmup at least 0")
    if len(target) == 1 and is_cycle_target(target[0]):
        report = run_cycle_child(target[0], args)
    else:
        report = run_command_cycles(target, cycles=args.cycles, warmup=args.warmup,
                                    retry_timeout=args.retry_timeout, timeout=args.timeout,
                                    ignore_kinds=args.ignore_kind)
    if args.out:
        write_json_atomic(args.out, report)
    if args.json:
        print(json.dumps(to_jsonable(report), indent=2))
    else:
        from .render import render_leaks
        sys.stdout.write(render_leaks(report))
    return 1 if report.leaks else 0


def run_cycle_child(target: str, args: argparse.Namespace) -> LeakReport:
    fd, out = tempfile.mkstemp(prefix="coroscope-leaks-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, "-m", "diag.fds.cycle_child", "--out", out, "--cycles", str(args.cycles),
           "--warmup", str(args.warmup), "--retry-timeout", str(args.retry_timeout)]
    if args.loop:
        cmd += ["--loop", args.loop]
    for kind in args.ignore_kind:
        cmd += ["--ignore-kind", kind]
    for frame in args.ignore_frame:
        cmd += ["--ignore-frame", frame]
    cmd.append(target)
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    try:
        # the workload's own output goes to stderr so --json stays clean
        proc = _run_to_end(cmd, args.timeout, stdout=sys.stderr.fileno(), stderr=subprocess.PIPE,
                           text=True, env=env)
        if proc.returncode == EXIT_BAD_TARGET:
            line = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "cannot load target"
            raise CoroscopeError(line.removeprefix("coroscope-child: error: "))
        if proc.returncode != 0 or os.path.getsize(out) == 0:
            sys.stderr.write(proc.stderr)
            tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit status {proc.returncode}"
            raise CoroscopeError(f"the workload failed before a report was written: {tail}", exit_code=1)
        sys.stderr.write(proc.stderr)
        with open(out, encoding="utf-8") as f:
            return leak_report_from_dict(json.load(f))
    except subprocess.TimeoutExpired:
        raise CoroscopeError(f"the workload did not finish in {args.timeout:g} s", exit_code=1) from None
    finally:
        try:
            os.unlink(out)
        except FileNotFoundError:
            pass


def _run_to_end(cmd: list[str], timeout: float, **popen) -> subprocess.CompletedProcess:
    """Run a workload to completion, as subprocess.run does; one that outlives ``timeout`` is
    asked to end the way every command coroscope started is (diag.started: SIGINT, SIGTERM,
    then SIGKILL, each with its grace), not killed outright, then TimeoutExpired is raised."""
    from diag.started import stop_process

    with subprocess.Popen(cmd, **popen) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# ---------------------------------------------------------------------------------------------
# command mode


def _set_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _reap_exited() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_command_cycles(cmd: list[str], *, cycles: int, warmup: int, retry_timeout: float = 1.0,
                       timeout: float = 600.0, ignore_kinds=()) -> LeakReport:
    """Run ``cmd`` to completion warmup + cycles times; report processes it leaves running."""
    from .leaks import Filters, Snapshot, group_leaks, settle, take_snapshot

    started = time.perf_counter()
    notices = []
    if not _set_subreaper():
        notices.append("could not become a child subreaper: only direct children are seen")

    def processes() -> Snapshot:
        _reap_exited()
        snap = take_snapshot(fds=False, detail=False)
        return Snapshot({key: item for key, item in snap.items.items() if item.kind == "process"})

    def run_once() -> None:
        try:
            _run_to_end(cmd, timeout, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno())
        except FileNotFoundError:
            raise CoroscopeError(f"no such command: {cmd[0]}") from None
        except PermissionError:
            raise CoroscopeError(f"cannot execute {cmd[0]}: permission denied") from None
        except subprocess.TimeoutExpired:
            raise CoroscopeError(f"{shlex.join(cmd)} did not finish in {timeout:g} s", exit_code=1) from None

    for _ in range(warmup):
        run_once()
    baseline = processes()
    samples = []
    for _ in range(cycles):
        run_once()
        samples.append(processes().counts())
    filters = Filters(kinds=frozenset(ignore_kinds))
    final, leaked, retries = settle(baseline, filters, timeout=retry_timeout, take=processes)
    base_n = baseline.counts().get("process", 0)
    final_n = final.counts().get("process", 0)
    leaks = group_leaks(leaked, cycles, {"process": final_n - base_n}) if final_n > base_n else []
    if leaks:
        pids = " ".join(str(item.key[0]) for item in leaked)
        notices.append(f"left running (not killed by coroscope): {pids}")
    return LeakReport(target=shlex.join(cmd), mode="command", cycles=cycles, warmup=warmup,
                      baseline=baseline.counts() or {"process": 0}, samples=samples,
                      per_cycle={"process": (final_n - base_n) / cycles}, leaks=leaks, notices=notices,
                      retries=retries, elapsed_s=time.perf_counter() - started)
