"""Baseline files: the syscalls per request each scenario made on the tree everyone trusts.

    {"version": 1, "scenarios": {"http-asyncio": {"syscalls_per_request": {"epoll_wait": 1.0}}}}

Written atomically (a reader sees the old file or the new one); a file that is not this shape
is one clear error line, never a traceback and never silently ignored.
"""
from __future__ import annotations

import json
from pathlib import Path

from diag.errors import CoroscopeError
from diag.model.base import write_json_atomic
from diag.model.check import Measurement

VERSION = 1


def load_baseline(path: Path) -> dict[str, dict] | None:
    """scenario name -> recorded values; None when the file does not exist."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CoroscopeError(f"baseline {path} is corrupt: not JSON ({exc.msg} at line {exc.lineno}); "
                             f"fix it or rewrite it with --update-baseline") from None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(
            data.get("scenarios"), dict):
        raise CoroscopeError(f"baseline {path} is corrupt: expected {{\"version\": {VERSION}, "
                             f"\"scenarios\": {{...}}}}; rewrite it with --update-baseline")
    for name, values in data["scenarios"].items():
        per_request = values.get("syscalls_per_request") if isinstance(values, dict) else None
        if per_request is not None and not (isinstance(per_request, dict) and all(
                isinstance(v, (int, float)) for v in per_request.values())):
            raise CoroscopeError(f"baseline {path} is corrupt: scenario {name!r} has a "
                                 f"syscalls_per_request that is not a table of numbers")
    return data["scenarios"]


def write_baseline(path: Path, measurements: list[Measurement], previous: dict | None) -> None:
    """Record the measured values, keeping scenarios this run did not measure."""
    scenarios = dict(previous or {})
    for m in measurements:
        if m.syscalls_per_request is not None:
            scenarios[m.scenario] = {"syscalls_per_request": m.syscalls_per_request,
                                     "syscalls_backend": m.syscalls_backend}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"version": VERSION, "scenarios": scenarios})
