"""The child process ``coroscope leaks`` runs a cycle function in.

    python -m diag.fds.cycle_child --out REPORT.json [--cycles N] [--warmup K] [--loop L]
        [--ignore-kind K]... [--ignore-frame S]... TARGET

TARGET is ``path/to/file.py[:function]`` or ``package.module:function`` (function defaults to
``cycle``); the module may define ``setup()`` and ``teardown()`` (sync or async), run once
before the warm-up and once after the last sample. fd tracking is installed before the target
is imported, so fds it opens at import time carry stacks too. The report is written atomically
to --out; a target that cannot be loaded ends the child with exit 3 and one line on stderr.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Any

EXIT_BAD_TARGET = 3


def split_target(target: str) -> tuple[str, str]:
    """"a/b.py:func" -> ("a/b.py", "func"); "pkg.mod:func" -> ("pkg.mod", "func"); default "cycle"."""
    module, sep, func = target.rpartition(":")
    if not sep or "/" in func or func.endswith(".py"):
        return target, "cycle"
    return module, func or "cycle"


def is_cycle_target(target: str) -> bool:
    """Cycle mode (a Python function) rather than a whole command: "x.py", "x.py:f" or "pkg.mod:f"."""
    module, func = split_target(target)
    return module.endswith(".py") or (":" in target and module.replace(".", "").replace("_", "").isalnum())


def load_module(spec: str):
    if spec.endswith(".py"):
        path = os.path.abspath(spec)
        if not os.path.exists(path):
            raise LookupError(f"no such file: {spec}")
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        name = "__coroscope_cycle__" + os.path.splitext(os.path.basename(path))[0]
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(spec)


def loop_factory(name: str | None):
    if not name or name == "asyncio":
        return None
    if name == "runtime":
        import runtime
        return runtime.new_event_loop
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    raise LookupError(f"unknown loop {name!r} (asyncio, runtime or uvloop)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cycle_child")
    parser.add_argument("--out", required=True)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--loop", default=None)
    parser.add_argument("--retry-timeout", type=float, default=1.0)
    parser.add_argument("--ignore-kind", action="append", default=[])
    parser.add_argument("--ignore-frame", action="append", default=[])
    parser.add_argument("target")
    args = parser.parse_args(argv)

    from diag.fds import fdtrack
    fdtrack.install()
    from diag.fds.leaks import Filters, run_cycles
    from diag.model.base import write_json_atomic

    module_spec, func_name = split_target(args.target)
    try:
        module = load_module(module_spec)
        cycle = getattr(module, func_name, None)
        if not callable(cycle):
            raise LookupError(f"{module_spec} has no function {func_name}()")
        factory = loop_factory(args.loop)
    except Exception as exc:  # the target's own import error, shown as one line
        print(f"coroscope-child: error: cannot load {args.target}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_BAD_TARGET
    setup: Any = getattr(module, "setup", None)
    teardown: Any = getattr(module, "teardown", None)
    report = run_cycles(cycle, cycles=args.cycles, warmup=args.warmup,
                        setup=setup if callable(setup) else None,
                        teardown=teardown if callable(teardown) else None,
                        loop_factory=factory, retry_timeout=args.retry_timeout,
                        filters=Filters(kinds=frozenset(args.ignore_kind), frames=tuple(args.ignore_frame)),
                        target=args.target)
    write_json_atomic(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
