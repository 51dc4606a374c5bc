"""``--compare asyncio,uvloop,runtime -- CMD``: the same command on each loop, one table.

Each loop gets its own run of the command (COROSCOPE_LOOP selects the loop in the target, see
``runtime.install_from_env``), measured the same way; a loop that cannot run (uvloop not
installed, the command failing) gets a row that says why instead of stopping the others.
"""
from __future__ import annotations

from typing import Callable

from ..errors import CoroscopeError
from ..model.syscalls import SyscallReport

LOOPS = ("asyncio", "uvloop", "runtime")


def parse_loops(text: str) -> list[str]:
    loops = [s.strip() for s in text.split(",") if s.strip()]
    if not loops:
        raise CoroscopeError("--compare needs a list of loops, e.g. asyncio,uvloop,runtime")
    for loop in loops:
        if loop not in LOOPS:
            raise CoroscopeError(f"unknown loop {loop!r} in --compare (choose from {', '.join(LOOPS)})")
    return loops


def compare(loops: list[str], cmd: list[str], *, collect: Callable[..., SyscallReport],
            **kwargs) -> list[tuple[str, SyscallReport | None, str | None]]:
    rows = []
    for loop in loops:
        try:
            rows.append((loop, collect(cmd=cmd, loop=loop, **kwargs), None))
        except CoroscopeError as exc:
            rows.append((loop, None, str(exc)))
    return rows
