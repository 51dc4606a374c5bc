"""The probe reader's bulk paths (``ProbeReader.poll_runs`` and ``skip``): the same records as
reading one record at a time, and under a writer at full speed every sequence number is
returned whole, skipped, or counted lost, exactly."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from diag.probe import ProbeReader, kind_table
from runtime import probefile as pf

PY = sys.executable


def payload(i: int) -> tuple:
    """The record with sequence number i that the writers below store (kind varies with i)."""
    return (i, 1 + i % 20, 0, i & 0xFFFF, 17 * i, i, 3 * i, -i, 7 * i, i ^ 0x5555, 11 * i,
            i + 1, 13 * i, i)


def write(w: pf.ProbeWriter, first: int, last: int) -> None:
    for i in range(first, last + 1):
        emit_payload(w.emit, i)
    w.flush_counters()


def emit_payload(emit, i: int) -> None:
    _seq, kind, thread, aux, ns, task, request, a, b, c, d, e, f, _end = payload(i)
    emit(kind, thread, aux, task, request, ns, a, b, c, d, e, f)


def one_by_one(reader: ProbeReader, first: int) -> tuple[list[tuple], int]:
    """What ``read_record`` gives from ``first`` on: the records, and how many were lost."""
    out, lost, seq = [], 0, first
    while True:
        status, rec = pf.read_record(reader.mm, reader.layout, seq)
        if status == pf.READ_OK:
            out.append(rec)
        elif status == pf.READ_LOST:
            lost += 1
        else:
            return out, lost
        seq += 1


def test_bulk_read_gives_what_reading_one_record_at_a_time_gives(tmp_path):
    layout = pf.Layout.default(ring_records=1024, strings_size=4096, fd_entries=16)
    w = pf.ProbeWriter.create(path=str(tmp_path / "p.probe"), layout=layout)
    try:
        reader = ProbeReader.open_file(w.path)
        write(w, 1, 700)                               # not wrapped: from the first record
        assert reader.poll_raw() == [payload(i) for i in range(1, 701)] and reader.lost == 0
        write(w, 701, 3000)                            # lapped: 700 + 1024 is long gone
        records, lost = one_by_one(reader, reader.next_seq)
        got = reader.poll_raw()
        assert (got, reader.lost) == (records, lost)
        assert got == [payload(i) for i in range(3000 - 1023, 3001)]
        assert lost == 3000 - 1024 - 700
        # a limit stops mid-ring, and the rest follows in order, wrapping around the ring's end
        write(w, 3001, 3900)
        first = reader.poll_raw(limit=100)
        rest = reader.poll_raw()
        assert first + rest == [payload(i) for i in range(3001, 3901)]
        assert reader.poll_raw() == [] and reader.next_seq == 3901
        reader.close()
    finally:
        w.close()


def test_skip_returns_the_wanted_kinds_and_counts_the_rest(tmp_path):
    layout = pf.Layout.default(ring_records=1024, strings_size=4096, fd_entries=16)
    w = pf.ProbeWriter.create(path=str(tmp_path / "p.probe"), layout=layout)
    try:
        reader = ProbeReader.open_file(w.path)
        write(w, 1, 5000)
        runs = reader.skip(4500, kind_table([3, 18]))
        got = [pf.RECORD_STRUCT.unpack_from(data, i * pf.RECORD_SIZE)
               for _first, data, indices in runs for i in indices]
        # records 1..3976 were overwritten (the ring holds the last 1024 of 5000)
        assert got == [payload(i) for i in range(5000 - 1023, 4500) if payload(i)[1] in (3, 18)]
        assert reader.lost == 5000 - 1024
        assert reader.skipped == 4499 - reader.lost - len(got)
        assert reader.poll_raw() == [payload(i) for i in range(4500, 5001)]
        reader.close()
    finally:
        w.close()


WRITER = textwrap.dedent("""
    import sys
    from runtime import probefile as pf
    from tests.test_probe_reader import emit_payload
    path, n = sys.argv[1], int(sys.argv[2])
    layout = pf.Layout.default(ring_records=1024, strings_size=4096, fd_entries=16)
    w = pf.ProbeWriter.create(path=path, layout=layout)
    print("ready", flush=True)
    sys.stdin.readline()
    emit = w.emit
    for i in range(1, n + 1):
        emit_payload(emit, i)
        if i % 256 == 0:
            w.flush_counters()          # as the runtime does once per loop iteration
    w.flush_counters()
    print("done", flush=True)
    sys.stdin.readline()
""")


def test_a_full_speed_writer_every_record_read_skipped_or_lost(tmp_path):
    """The reader alternates bulk reads and skips (keeping kinds 5 and 11) while another
    process writes 200,000 records as fast as it can into a ring of 1024."""
    n = 200_000
    wanted = (5, 11)
    path = str(tmp_path / "ring.probe")
    proc = subprocess.Popen([PY, "-c", WRITER, path, str(n)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert proc.stdout.readline().strip() == "ready"
        reader = ProbeReader.open_file(path)
        table = kind_table(wanted)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        os.set_blocking(proc.stdout.fileno(), False)
        got, from_skips, rounds = [], 0, 0
        while True:
            rounds += 1
            written = reader.records_written()
            if rounds % 3 == 0 and written - reader.next_seq > 300:
                for _first, data, indices in reader.skip(written - 100, table):
                    marked = [pf.RECORD_STRUCT.unpack_from(data, i * pf.RECORD_SIZE)
                              for i in indices]
                    assert all(r[1] in wanted for r in marked)
                    got += marked
                    from_skips += len(marked)
            batch = reader.poll_raw(limit=400)
            got += batch
            if rounds % 5 == 0:
                time.sleep(0.0005)            # fall behind now and then: the writer laps us
            if not batch and proc.stdout.readline().startswith("done"):
                got += reader.poll_raw()
                break
            assert batch or proc.poll() is None, "the writer died"
        seqs = [r[0] for r in got]
        assert all(b > a for a, b in zip(seqs, seqs[1:])), "records out of order"
        assert all(r == payload(r[0]) for r in got), "a torn record"
        print(f"ring: {len(got)} read ({from_skips} through skips) + {reader.skipped} skipped "
              f"+ {reader.lost} lost of {n}")
        assert len(got) + reader.skipped + reader.lost == n          # exactly counted
        assert from_skips > 0 and reader.skipped > 0 and len(got) > from_skips
        reader.close()
    finally:
        proc.kill()
        proc.wait()
