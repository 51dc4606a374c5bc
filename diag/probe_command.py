"""``coroscope probe PID``: print what a traced process publishes in its probe file.

Without options: the live counters, the threads (what task and request each runs now), then
every record still in the ring. ``--follow`` keeps printing new records until Ctrl-C,
``--duration`` or the target's exit, and says how many records the writer overwrote before we
read them. ``--json`` prints the whole snapshot (``diag.model.probe.ProbeSnapshot``).
Reading never disturbs the target: see ``diag.probe``.
"""
from __future__ import annotations

import json
import sys

from .errors import CoroscopeError, TargetGone
from .model.base import to_jsonable, write_json_atomic
from .model.probe import ProbeRecord, ProbeSnapshot
from runtime.probefile import Rec

from .probe import ProbeReader, remove_stale_files


def configure(parser) -> None:
    parser.add_argument("pid", type=int, nargs="?", help="process id of a process traced with COROSCOPE_TRACE=1")
    parser.add_argument("--clean-stale", action="store_true",
                        help="remove the named probe files older coroscope versions left in /dev/shm "
                             "(every command does it too; today's regions leave nothing)")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing new records (until Ctrl-C, --duration or the target exits)")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="with --follow: stop after this long")
    parser.add_argument("--new", action="store_true",
                        help="start after the newest record instead of the oldest one still kept")
    parser.add_argument("--kind", action="append", default=[], metavar="KIND",
                        help="only records of this kind (task_create, step_end, request_begin, ...); repeatable")
    parser.add_argument("--limit", type=int, default=None, help="print at most this many records")
    parser.add_argument("--no-records", action="store_true", help="counters and threads only")
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    parser.add_argument("-o", "--output", default=None, metavar="FILE", help="write the JSON snapshot to FILE")


def format_record(rec: ProbeRecord) -> str:
    parts = [f"{rec.seq:>8}", f"{rec.ns / 1e9:14.6f}", f"{rec.kind:<16}"]
    parts.append(f"task={rec.task}" if rec.task else "      ")
    if rec.request:
        parts.append(f"req={rec.request}")
    for name, value in rec.fields.items():
        if value in ("", None):
            continue
        if isinstance(value, str) and "\n" in value:
            value = value.replace("\n", " <- ")
        parts.append(f"{name}={value}")
    return " ".join(parts)


def format_summary(snap: ProbeSnapshot) -> str:
    c = snap.counters
    fds = ", ".join(f"{k[len('fds_open_'):]} {v}" for k, v in c.items() if k.startswith("fds_open_") and v)
    lines = [
        f"pid {snap.pid}  loop {snap.loop_kind}  probe v{snap.version}  {snap.path}"
        + ("" if snap.live else "  (writer closed)"),
        f"tasks alive {c['tasks_alive']} (created {c['tasks_created']})  steps {c['steps']}  "
        f"slow steps {c['slow_steps']}  requests done {c['requests_done']} (active {c['requests_active']})",
        f"loop iterations {c['loop_iterations']}  io ready {c['io_ready']}  timers fired {c['timers_fired']}  "
        f"executor pending {c['executor_pending']}  records {c['records_written']}",
        f"fds open by kind: {fds or 'none traced'}",
    ]
    for t in snap.threads:
        running = f"step running {t.step_running_ns / 1e6:.1f} ms" if t.step_running_ns else "idle"
        lines.append(f"thread {t.tid} (slot {t.index}): task {t.task or '-'}  request {t.request or '-'}  {running}")
    return "\n".join(lines)


def main(args) -> int:
    if args.clean_stale:
        for path in remove_stale_files():
            print(f"removed {path}")
        if args.pid is None:
            return 0
    if args.pid is None:
        raise CoroscopeError("give the pid of a traced process (or --clean-stale)")
    reader = ProbeReader.attach(args.pid, from_start=not args.new)
    kinds = set(args.kind)
    unknown = kinds - {k.name.lower() for k in Rec}
    if unknown:
        raise CoroscopeError(f"unknown record kind {sorted(unknown)[0]!r}")
    out = sys.stdout
    collected: list[ProbeRecord] = []
    try:
        if args.follow:
            if not args.json:
                print(format_summary(reader.snapshot()), file=out)
            count = 0
            try:
                for rec in reader.follow(duration=args.duration):
                    if kinds and rec.kind not in kinds:
                        continue
                    if args.json or args.output:
                        collected.append(rec)
                    else:
                        print(format_record(rec), file=out, flush=True)
                    count += 1
                    if args.limit is not None and count >= args.limit:
                        break
            except KeyboardInterrupt:
                pass
        elif not args.no_records:
            for rec in reader.poll():
                if not kinds or rec.kind in kinds:
                    collected.append(rec)
            if args.limit is not None:
                collected = collected[-args.limit:]
        try:
            snap = reader.snapshot(collected)
        except CoroscopeError:
            # The target exited while we read: keep what we gathered, then say so.
            snap = ProbeSnapshot(pid=reader.pid, path=reader.path, version=reader.header.version,
                                 loop_kind=reader.header.loop_kind, live=False,
                                 counters=reader.counters(), threads=[], open_fds=[],
                                 records=collected, records_lost=reader.lost)
        if args.output:
            write_json_atomic(args.output, snap)
        if args.json:
            json.dump(to_jsonable(snap), out, indent=2)
            out.write("\n")
        elif not args.follow:
            print(format_summary(snap), file=out)
            for rec in collected:
                print(format_record(rec), file=out)
        if not args.json:
            print(f"records lost (overwritten before read): {reader.lost}", file=out)
    finally:
        reader.close()
    if reader.target_gone:
        raise TargetGone(f"process {args.pid} died while being followed (records above are all it published)")
    return 0
