"""Which processes to export, and what each one is called.

A traced process is one whose probe ``diag.probe`` can open: ``--pid`` names them, ``--all``
finds every one on the host by trying each pid in /proc, the same "open the probe of pid N"
the dashboard does, so wherever the probe lives the exporter finds it. Trying a pid that is
not traced is a failed open; nothing is asked of the process.

``service``: the COROSCOPE_SERVICE variable of the process's environment (what a fleet sets
to name its services), else the command's name: for ``python -m pkg.mod`` the module, for
``python app.py`` the script's stem, else the executable's basename.
"""
from __future__ import annotations

import os

from diag.errors import CoroscopeError
from diag.probe import ProbeReader

MAX_ENVIRON = 1 << 20          # bytes of /proc/PID/environ read: bounded like every read


def _read(path: str, limit: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit)


def service_name(pid: int) -> str:
    try:
        for item in _read(f"/proc/{pid}/environ", MAX_ENVIRON).split(b"\0"):
            if item.startswith(b"COROSCOPE_SERVICE="):
                name = item.split(b"=", 1)[1].decode(errors="replace").strip()
                if name:
                    return name
    except OSError:
        pass
    try:
        argv = [a.decode(errors="replace") for a in
                _read(f"/proc/{pid}/cmdline", 65536).split(b"\0") if a]
    except OSError:
        argv = []
    if not argv:
        return f"pid-{pid}"
    exe = os.path.basename(argv[0])
    if exe.startswith("python"):
        args = argv[1:]
        while args and args[0].startswith("-") and args[0] not in ("-m", "-c"):
            # interpreter flags (-u, -X dev, -W error: the last two take a value)
            args = args[2:] if args[0] in ("-X", "-W", "--check-hash-based-pycs") else args[1:]
        if len(args) >= 2 and args[0] == "-m":
            return args[1]
        if args and not args[0].startswith("-"):
            base = os.path.basename(args[0])
            return base[:-3] if base.endswith(".py") else base
    return exe


def open_probe(pid: int) -> ProbeReader | None:
    """The probe of ``pid``, following only what comes next; None when it has none."""
    try:
        return ProbeReader.attach(pid, from_start=False)
    except CoroscopeError:
        return None


def traced_pids() -> list[int]:
    """Every process on the host with a probe to read (not this one)."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        reader = open_probe(int(name))
        if reader is not None:
            reader.close()
            found.append(int(name))
    return sorted(found)
