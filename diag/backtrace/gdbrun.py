"""Run gdb in batch mode with the coroscope scripts and bring back the report.

gdb does the reading (ptrace on a live process, or a core file); this module only builds the
command line, bounds its time, and turns gdb's output into a ``BacktraceReport`` or one clear
error line.  On a timeout gdb gets SIGTERM first: gdb detaches from an attached process when it
quits, so the target carries on; SIGKILL only if it does not go.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import diag
from diag.errors import CoroscopeError, TargetGone
from diag.model.tasks import BacktraceReport, report_from_json

GDB_DIR = Path(diag.__file__).resolve().parent.parent / "gdb"
JSON_BEGIN = "COROSCOPE-JSON-BEGIN"
JSON_END = "COROSCOPE-JSON-END"


def gdb_command(*, pid: int | None = None, core: str | None = None, exe: str | None = None,
                commands: tuple[str, ...] = ("coro json",), pre: tuple[str, ...] = ()) -> list[str]:
    gdb = shutil.which("gdb")
    if gdb is None:
        raise CoroscopeError("gdb is not installed (apt-get install gdb)")
    if not (GDB_DIR / "coroscope.py").is_file():
        raise CoroscopeError(f"the coroscope gdb scripts are missing (expected {GDB_DIR}/coroscope.py)")
    cmd = [gdb, "-nx", "-q", "-batch",
           "-iex", "set auto-load off", "-iex", "set debuginfod enabled off",
           "-iex", "set pagination off", "-iex", "set width 0", "-iex", "set confirm off"]
    for c in pre:
        cmd += ["-iex", c]
    if pid is not None:
        cmd += ([exe] if exe else []) + ["-p", str(pid)]
    else:
        cmd += [exe, core]
    cmd += ["-ex", f"source {GDB_DIR / 'coroscope.py'}"]
    for c in commands:
        cmd += ["-ex", c]
    return cmd


def run_gdb(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # gdb detaches on quit
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise CoroscopeError(f"gdb did not finish within {timeout:g} s (detached)")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _error_line(out: str, err: str) -> str | None:
    for line in err.splitlines():
        if "ptrace: Operation not permitted" in line:
            return "gdb may not attach (ptrace not permitted: needs root or a lower ptrace_scope)"
        if "ptrace: No such process" in line:
            return "the process went away before gdb could attach"
        if "is not a core dump" in line or "not in executable format" in line:
            return line.strip()
    for line in (err + "\n" + out).splitlines():
        line = line.strip()
        if line.startswith("coroscope: "):
            return line[len("coroscope: "):]
    return None


def check_target(pid: int | None, core: str | None, exe: str | None) -> str:
    if pid is not None:
        if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
            raise CoroscopeError(f"no process with pid {pid}")
        return f"pid {pid}"
    if not core or not exe:
        raise CoroscopeError("give a PID, or --core CORE with --exe PYTHON")
    _check_core(core, exe)
    return f"core {core}"


def _check_core(core: str | None, exe: str | None) -> None:
    for path, what in ((core, "core file"), (exe, "executable")):
        if not os.path.isfile(path):
            raise CoroscopeError(f"no such {what}: {path}")
    with open(core, "rb") as f:
        if f.read(4) != b"\x7fELF":
            raise CoroscopeError(f"{core} is not a core file (not ELF)")


def collect_document(pid: int | None = None, core: str | None = None, exe: str | None = None,
                     timeout: float = 120.0, pre: tuple[str, ...] = ()) -> dict:
    """The raw JSON document of ``coro json`` (tasks plus metadata)."""
    target = check_target(pid, core, exe)
    result = run_gdb(gdb_command(pid=pid, core=core, exe=exe, pre=pre), timeout)
    return parse_document(result, target, pid)


def parse_document(result: subprocess.CompletedProcess, target: str, pid: int | None = None) -> dict:
    out = result.stdout
    if JSON_BEGIN in out and JSON_END in out:
        body = out.split(JSON_BEGIN, 1)[1].split(JSON_END, 1)[0]
        try:
            return json.loads(body)
        except json.JSONDecodeError as exc:
            raise CoroscopeError(f"gdb printed malformed JSON: {exc}") from None
    message = _error_line(out, result.stderr)
    if pid is not None and not os.path.exists(f"/proc/{pid}"):
        raise TargetGone(f"process {pid} exited while gdb was reading it")
    if message:
        raise CoroscopeError(f"{target}: {message}")
    tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    raise CoroscopeError(f"{target}: gdb failed: {tail}")


def collect(pid: int | None = None, core: str | None = None, exe: str | None = None,
            timeout: float = 120.0, pre: tuple[str, ...] = ()) -> BacktraceReport:
    target = f"pid {pid}" if pid is not None else f"core {core}"
    return report_from_json(collect_document(pid, core, exe, timeout, pre), target)
