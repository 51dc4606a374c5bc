"""Opening stacks of another process's fds, from its probe file's fd-origin table.

The table (``runtime/probefile.py``, read through ``diag.probe``) is written by the traced
process itself on every fd open (the runtime's own fds, and user code's when fdtrack runs with
tracing on). Reading it is a load from our mapping of the file: no syscall in the target.
Stacks are stored as "file:line in function" lines, innermost first.
"""
from __future__ import annotations

from diag.errors import CoroscopeError
from diag.model.fds import Frame, Origin

from .fdtrack import site_of, users_frames

# probe kinds that say nothing about what the fd is now: accept whatever it is
_ANY_KIND = {"unknown", "other"}


def parse_stack(text: str) -> list[Frame]:
    frames = []
    for line in text.splitlines():
        where, sep, function = line.rpartition(" in ")
        if not sep:
            where, function = line, "?"
        file, _, lineno = where.rpartition(":")
        try:
            frames.append(Frame(file=file, line=int(lineno), function=function))
        except ValueError:
            frames.append(Frame(file=where, line=0, function=function))
    return users_frames([f for f in frames if not f.file.endswith("diag/fds/fdtrack.py")])


def probe_origins(pid: int, fds: list[int] | None = None) -> tuple[dict[int, tuple[str, Origin]], str | None]:
    """fd -> (kind, Origin) from the probe file of ``pid``, and a notice when there is none."""
    try:
        from diag import probe
    except ImportError as exc:
        return {}, f"opening stacks unavailable: the probe reader cannot be imported ({exc})"
    try:
        reader = probe.attach(pid)
    except CoroscopeError as exc:
        return {}, f"no opening stacks: {exc}"
    except Exception as exc:  # a probe file in a format this version does not read
        return {}, f"no opening stacks: cannot read the probe file of pid {pid}: {exc}"
    out: dict[int, tuple[str, Origin]] = {}
    try:
        for origin in reader.open_fds(fds):
            stack = parse_stack(origin.stack or "")
            kind = "any" if origin.kind in _ANY_KIND else origin.kind
            out[origin.fd] = (kind, Origin(stack=stack, site=site_of(stack),
                                           task=str(origin.task) if origin.task else None,
                                           request=str(origin.request) if origin.request else None,
                                           source="probe"))
    finally:
        reader.close()
    if not out:
        return out, f"the probe file of pid {pid} names no open fd (the target opened them before tracing, or without fdtrack)"
    return out, None
