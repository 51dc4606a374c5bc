"""pprof profiles: a FlameProfile as a gzipped profile.proto, and back.

pprof's format is what the fleet tools read: ``go tool pprof``, Pyroscope, Parca, Grafana and
Datadog all take a gzipped ``perftools.profiles.Profile``. It is encoded here with the
protobuf library and the message classes protoc generated from pprof's own profile.proto
(``profile_pb2``, which says how it was made), never by writing varints by hand: a reader
that accepts Google's schema accepts this.

How a FlameProfile maps onto it
-------------------------------
- Each distinct frame label (``function (path:line)``, or a synthetic ``[event loop]``) is one
  Function (name, file, start line) and one Location with one Line. Python frames have no
  addresses, so there is no Mapping; pprof allows that.
- Each stack is one Sample, leaf first as pprof wants (a FlameProfile is root first), with
  its labels (``task``, ``request``, ``thread``, where the sampler knew them) as string
  labels: ``go tool pprof -tagfocus task=h`` and Pyroscope's label filters work on them.
- Values: a weight in microseconds of CPU (the in-process sampler's cpu mode) is one value,
  ``cpu``/``nanoseconds``. A weight in samples is two: ``samples``/``count`` (first, as the
  format asks of a count) and, when the rate is known, the time they stand for in
  nanoseconds (count x period), typed ``cpu``, ``wall`` or ``await`` by mode, which is what
  Pyroscope and ``go tool pprof`` show by default (the last value). ``period_type`` and
  ``period`` say the sampling interval.

Reading (``read``) goes the other way with the same classes, taking the default sample type
(or the last), so ``coroscope flame diff`` compares pprof files, ours or anyone's.
"""
from __future__ import annotations

import gzip
import time

from diag.model.flame import FlameProfile, StackCount, split_frame

from . import profile_pb2

GZIP_MAGIC = b"\x1f\x8b"


class PprofError(ValueError):
    pass


class _Strings:
    """pprof's string table: index 0 is the empty string, every string stored once."""

    def __init__(self, table):
        self.table = table
        self.index: dict[str, int] = {}
        self("")

    def __call__(self, s: str) -> int:
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.table)
            self.table.append(s)
        return i


def to_message(profile: FlameProfile, time_ns: int | None = None) -> profile_pb2.Profile:
    """The profile as a ``perftools.profiles.Profile`` message."""
    msg = profile_pb2.Profile()
    s = _Strings(msg.string_table)
    period_ns = int(round(1e9 / profile.rate_hz)) if profile.rate_hz else 0
    if profile.unit == "microseconds":
        types, scales = [("cpu", "nanoseconds")], [1000.0]
    elif period_ns:
        types, scales = [("samples", "count"), (profile.mode, "nanoseconds")], [1.0, period_ns]
    else:
        types, scales = [("samples", "count")], [1.0]
    for kind, unit in types:
        msg.sample_type.add(type=s(kind), unit=s(unit))
    if period_ns:
        msg.period_type.type = s(profile.mode)
        msg.period_type.unit = s("nanoseconds")
        msg.period = period_ns
    msg.time_nanos = time.time_ns() if time_ns is None else time_ns
    if profile.duration_s:
        msg.duration_nanos = int(profile.duration_s * 1e9)
    for note in ([f"coroscope {profile.mode} profile of {profile.target} via {profile.backend}"]
                 + list(profile.notes)):
        msg.comment.append(s(note))

    locations: dict[str, int] = {}

    def location(frame: str) -> int:
        loc_id = locations.get(frame)
        if loc_id is None:
            loc_id = locations[frame] = len(locations) + 1
            name, path, line = split_frame(frame)
            msg.function.add(id=loc_id, name=s(name), filename=s(path or ""),
                             start_line=line or 0)
            msg.location.add(id=loc_id).line.add(function_id=loc_id, line=line or 0)
        return loc_id

    for stack in profile.stacks:
        values = [int(round(stack.weight * scale)) for scale in scales]
        if not any(values):
            continue
        sample = msg.sample.add(location_id=[location(f) for f in reversed(stack.frames)],
                                value=values)
        for key, value in sorted(stack.labels.items()):
            sample.label.add(key=s(key), str=s(str(value)))
    return msg


def encode(profile: FlameProfile, time_ns: int | None = None) -> bytes:
    """The gzipped serialized profile: the bytes of a ``.pb.gz`` file."""
    return gzip.compress(to_message(profile, time_ns).SerializeToString(), mtime=0)


def decode(data: bytes, origin: str = "input") -> profile_pb2.Profile:
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise PprofError(f"{origin}: corrupt gzip ({exc})") from None
    msg = profile_pb2.Profile()
    try:
        msg.ParseFromString(data)
    except Exception as exc:        # google.protobuf.message.DecodeError, or worse
        raise PprofError(f"{origin}: not a pprof profile ({exc})") from None
    if not msg.string_table or msg.string_table[0] != "":
        raise PprofError(f"{origin}: not a pprof profile (no string table)")
    return msg


def frames_and_labels(msg: profile_pb2.Profile, origin: str = "input"
                      ) -> list[tuple[tuple[str, ...], dict[str, str], list[int]]]:
    """(frames root first, labels, values) per sample; inlined frames (several lines in a
    location) come out as separate frames, the caller first."""
    st = msg.string_table

    def string(i: int) -> str:
        if not 0 <= i < len(st):
            raise PprofError(f"{origin}: string index {i} out of range")
        return st[i]

    functions = {f.id: (string(f.name), string(f.filename)) for f in msg.function}
    labels_of: dict[int, tuple[str, ...]] = {}
    for loc in msg.location:
        names = []
        for line in reversed(loc.line):              # the last line is the caller
            name, path = functions.get(line.function_id, (f"0x{loc.address:x}", ""))
            names.append(f"{name} ({path}:{line.line})" if path else name)
        labels_of[loc.id] = tuple(names) or (f"0x{loc.address:x}",)
    out = []
    for sample in msg.sample:
        frames: list[str] = []
        for loc_id in reversed(sample.location_id):
            if loc_id not in labels_of:
                raise PprofError(f"{origin}: sample refers to a missing location {loc_id}")
            frames.extend(labels_of[loc_id])
        labels = {string(lab.key): string(lab.str) if lab.str else str(lab.num)
                  for lab in sample.label}
        out.append((tuple(frames), labels, list(sample.value)))
    return out


def value_index(msg: profile_pb2.Profile) -> int:
    """Which of the sample values to read: the default sample type, else the last."""
    if msg.default_sample_type:
        for i, vt in enumerate(msg.sample_type):
            if vt.type == msg.default_sample_type:
                return i
    return max(0, len(msg.sample_type) - 1)


def read_stacks(data: bytes, origin: str = "input"
                ) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], dict[str, str]]]:
    """(stack -> weight, stack -> labels) of a pprof file's bytes. Stacks that differ only in
    labels are summed; their labels are those of the first."""
    msg = decode(data, origin)
    i = value_index(msg)
    stacks: dict[tuple[str, ...], float] = {}
    labels: dict[tuple[str, ...], dict[str, str]] = {}
    for frames, labs, values in frames_and_labels(msg, origin):
        if not frames or i >= len(values) or values[i] <= 0:
            continue
        stacks[frames] = stacks.get(frames, 0.0) + values[i]
        labels.setdefault(frames, labs)
    return stacks, labels


def to_profile(data: bytes, origin: str = "input") -> FlameProfile:
    """A pprof file as a FlameProfile, labels kept per sample (the weights: the value
    ``value_index`` picks)."""
    msg = decode(data, origin)
    i = value_index(msg)
    unit = msg.string_table[msg.sample_type[i].unit] if msg.sample_type else "samples"
    kind = msg.string_table[msg.sample_type[i].type] if msg.sample_type else "cpu"
    stacks = [StackCount(list(frames), float(values[i]), labels)
              for frames, labels, values in frames_and_labels(msg, origin)
              if frames and i < len(values) and values[i] > 0]
    return FlameProfile(mode=kind if kind in ("cpu", "wall", "await") else "cpu",
                        backend="file", unit="samples" if unit == "count" else unit,
                        stacks=stacks, duration_s=msg.duration_nanos / 1e9 or None,
                        target=origin)
