"""The ``coroscope`` command: one subcommand per concern, each in its own module.

A command module defines ``configure(parser)`` (its arguments) and ``main(args) -> int``.
Modules are imported only when their command runs, so ``coroscope bt`` does not pay for
Textual and ``coroscope top`` does not pay for bcc.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CoroscopeError

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("runtime.launcher", "run an unchanged asyncio program on the coroscope runtime"),
    "probe": ("diag.probe_command", "read the tracepoint records a traced process publishes"),
    "syscalls": ("diag.syscalls.command", "count syscalls per request, per task or per thread"),
    "fds": ("diag.fds.command_fds", "list a process's open fds with the stack that opened each"),
    "leaks": ("diag.fds.command_leaks", "run a workload in cycles and report what grows"),
    "bt": ("diag.backtrace.command", "coroutine backtraces of a live process (read from outside) or a core file (gdb)"),
    "flame": ("diag.flame.command", "flame graphs: on-CPU, wall, or time spent awaiting"),
    "top": ("dashboards.command", "the live dashboard of a running process"),
    "doctor": ("diag.doctor.command", "diagnose a service under load and write a report"),
    "check": ("diag.check.command", "CI gate: budgets and baselines for syscalls, leaks, warnings"),
    "export": ("diag.export.command", "Prometheus /metrics and Pyroscope profile push for traced processes"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coroscope",
        description="Profiling and diagnostics for Python coroutine services.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _not_a_target() -> None:
    """A shell that exported COROSCOPE_TRACE=1 traces every Python process, coroscope's own
    commands too (the start-up hook runs before this). A command is the observer, not the
    observed: its probe would be one more traced process for `top` to list and `export` to
    scrape. The variables stay in the environment, for the targets it starts.  Tracing is on
    only if the hook imported the tracer: when it did not, importing it here (and the runtime
    and asyncio with it) only to hear "off" would be most of a short command's start."""
    tracing = sys.modules.get("runtime.tracing")
    if tracing is not None and tracing.enabled():
        tracing.disable()


def _remove_legacy_probe_files() -> None:
    """Probe files that versions before the memfd region left in /dev/shm by processes that
    died unclean: every command removes those of processes that are gone (today's regions
    cannot be left behind). One directory listing."""
    try:
        from .probe import remove_stale_files
        remove_stale_files()
    except Exception:      # never let housekeeping stop a command
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"coroscope: error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    _not_a_target()
    _remove_legacy_probe_files()
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"coroscope: error: {name} is not available: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"coroscope {name}", description=help_text)
    module.configure(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.main(args) or 0)
    except CoroscopeError as exc:
        print(f"coroscope: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
