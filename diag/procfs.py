"""What /proc says about a target, read without touching it: is it there, is it CPython."""
from __future__ import annotations

import os

from .errors import TargetGone


def python_process(pid: int) -> bool | None:
    """True when the executable or a mapped library is python / libpython, False when /proc
    shows it is not, None when /proc will not say (no permission). TargetGone: no such pid."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError:
        raise TargetGone(f"no process with pid {pid}") from None
    except OSError:
        return None
    if os.path.basename(exe).startswith("python"):
        return True
    try:
        with open(f"/proc/{pid}/maps") as f:
            return any("libpython" in line for line in f)
    except FileNotFoundError:
        raise TargetGone(f"no process with pid {pid}") from None
    except OSError:
        return None
