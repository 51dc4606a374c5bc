"""How coroscope gets into a target it starts: ``sitecustomize`` on the target's PYTHONPATH.

A target launched by ``coroscope syscalls|flame|leaks|doctor -- CMD`` is a separate Python
process running unchanged user code. Python imports ``sitecustomize`` at start-up from the
first directory on ``sys.path`` that has one; this package's directory holds ours, which reads
``COROSCOPE_*`` variables and turns on what was asked for (the loop, tracepoints, fd tracking,
the sampler), then hands over to any ``sitecustomize`` the target had of its own. Nothing runs
in a target that was not started this way, and a target started this way with no variables set
runs exactly as before.
"""
from __future__ import annotations

import os
from pathlib import Path

BOOTSTRAP_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BOOTSTRAP_DIR.parent.parent


def target_environment(
    base: dict[str, str] | None = None,
    *,
    loop: str | None = None,
    trace: bool = False,
    fdtrack: bool = False,
    sampler: str | None = None,
) -> dict[str, str]:
    """The environment for a target: ours first on PYTHONPATH, the chosen features switched on.

    loop: "runtime", "asyncio" or "uvloop" (None leaves the program's own choice).
    sampler: the value for COROSCOPE_SAMPLER (its format belongs to diag.flame.sampler).
    """
    env = dict(os.environ if base is None else base)
    paths = [str(BOOTSTRAP_DIR), str(PROJECT_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if loop:
        env["COROSCOPE_LOOP"] = loop
    if trace:
        env["COROSCOPE_TRACE"] = "1"
    if fdtrack:
        env["COROSCOPE_FDTRACK"] = "1"
    if sampler:
        env["COROSCOPE_SAMPLER"] = sampler
    return env
