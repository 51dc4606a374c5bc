"""``python -m runtime app.py [args]`` / ``python -m runtime -m package.module [args]``:
run an unchanged asyncio program with the runtime's loop policy installed."""
from __future__ import annotations

import runpy
import sys

import runtime

USAGE = "usage: python -m runtime (SCRIPT | -m MODULE) [ARGS...]"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    runtime.install()
    if argv[0] == "-m":
        if len(argv) < 2:
            print(USAGE, file=sys.stderr)
            return 2
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
