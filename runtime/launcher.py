"""``coroscope run [--loop runtime|asyncio|uvloop] [--trace] -- COMMAND...``

Runs an unchanged program with the chosen event loop policy (the runtime by default). The
program is exec'd in place of this process, so its pid, exit status and signals are the ones
the user would get running it directly; coroscope's start-up hook (``diag/bootstrap``, put
first on PYTHONPATH) installs the loop through ``runtime.install_from_env()``.

COMMAND is ``python app.py ...`` (a bare ``python`` or ``python3`` means the interpreter coroscope
itself runs on, which has coroscope installed), ``app.py ...`` (run with that interpreter), or
any other executable that ends up running Python.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

from diag.errors import CoroscopeError

from . import LOOP_CHOICES


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loop", choices=LOOP_CHOICES, default="runtime",
                        help="event loop policy to install in the program (default: runtime)")
    parser.add_argument("--trace", action="store_true",
                        help="turn the runtime's tracepoints on (the probe file)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the program: -- python app.py [args], or -- app.py [args]")


def build_command(command: list[str]) -> list[str]:
    """The argv to exec for what the user typed after ``--``."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CoroscopeError("nothing to run: give a command after --, e.g. coroscope run -- python app.py")
    first = command[0]
    if first in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        return [sys.executable, *command[1:]]
    if first.endswith(".py") or (os.path.isfile(first) and not os.access(first, os.X_OK)):
        if not os.path.isfile(first):
            raise CoroscopeError(f"no such file: {first}")
        return [sys.executable, *command]
    if os.sep not in first and shutil.which(first) is None:
        raise CoroscopeError(f"command not found: {first}")
    if os.sep in first and not os.access(first, os.X_OK):
        raise CoroscopeError(f"not an executable: {first}")
    return list(command)


def main(args: argparse.Namespace) -> int:
    from diag.bootstrap import target_environment

    argv = build_command(list(args.command))
    env = target_environment(loop=args.loop, trace=args.trace)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        raise CoroscopeError(f"cannot run {argv[0]}: {exc.strerror}") from None
    return 127  # not reached
