"""Recordings of the dashboard: a header line, then one snapshot per line (JSON lines).

    {"format": "coroscope-top-recording", "version": 1, "snapshot_version": 1, "pid": 123, ...}
    {<LiveSnapshot as JSON>}
    ...

JSON lines because a recording grows while the dashboard runs and must be readable up to the
last whole line. The file is written under ``<name>.partial`` and renamed when the recording
stops, so a finished recording is never seen half-written; a ``.partial`` left by a crash can
still be replayed up to its truncation point with ``allow_truncated``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from diag.errors import CoroscopeError
from diag.model.base import to_jsonable
from diag.model.live import SNAPSHOT_VERSION, LiveSnapshot, from_jsonable

FORMAT = "coroscope-top-recording"
VERSION = 1


class Recorder:
    def __init__(self, path: str | os.PathLike, pid: int = 0, command: str = ""):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.count = 0
        try:
            self._file = open(self.partial, "w", encoding="utf-8")
        except OSError as exc:
            raise CoroscopeError(f"cannot record to {self.path}: {exc.strerror}") from None
        header = {"format": FORMAT, "version": VERSION, "snapshot_version": SNAPSHOT_VERSION,
                  "pid": pid, "command": command}
        self._file.write(json.dumps(header) + "\n")
        self._file.flush()

    def add(self, snap: LiveSnapshot) -> None:
        self._file.write(json.dumps(to_jsonable(snap), separators=(",", ":")) + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> Path:
        if not self._file.closed:
            self._file.close()
            os.replace(self.partial, self.path)
        return self.path


def load(path: str | os.PathLike, allow_truncated: bool = False) -> list[LiveSnapshot]:
    """Every snapshot of a recording; CoroscopeError with one line for anything wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CoroscopeError(f"replay file {path} does not exist") from None
    except OSError as exc:
        raise CoroscopeError(f"cannot read replay file {path}: {exc.strerror}") from None
    lines = data.split(b"\n")
    complete_last = data.endswith(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise CoroscopeError(f"replay file {path} is empty")
    try:
        header = json.loads(lines[0])
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CoroscopeError(f"{path} is not a coroscope top recording (no {FORMAT} header)")
    if header.get("version") != VERSION or header.get("snapshot_version") != SNAPSHOT_VERSION:
        raise CoroscopeError(
            f"{path} is a recording of format version {header.get('version')} (snapshots "
            f"v{header.get('snapshot_version')}); this coroscope reads version {VERSION} "
            f"(snapshots v{SNAPSHOT_VERSION})")
    snaps: list[LiveSnapshot] = []
    for number, line in enumerate(lines[1:], start=2):
        is_last = number == len(lines)
        try:
            snaps.append(from_jsonable(LiveSnapshot, json.loads(line)))
        except (ValueError, TypeError, KeyError) as exc:
            truncated = is_last and not complete_last
            if truncated and allow_truncated:
                break
            what = "is truncated" if truncated else "is corrupt"
            raise CoroscopeError(
                f"replay file {path} {what} at line {number} ({len(snaps)} whole snapshots "
                f"before it): {str(exc).splitlines()[0][:80]}") from None
    if not snaps:
        raise CoroscopeError(f"replay file {path} holds no snapshots")
    return snaps
