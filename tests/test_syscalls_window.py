"""Which requests a syscall window holds, from the probe's counters and table of running
requests (``runtime.probefile``, "Requests a window counts"), and how the aggregator treats the
requests that ran across its edges."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from diag.syscalls.aggregate import build_report
from diag.syscalls.counts import LOOP, REQUEST, RawCounts, RequestWindow

PY = sys.executable

WINDOW = textwrap.dedent("""
    import json, os
    from runtime import probefile as pf, tracing
    from runtime.requests import request
    from diag.syscalls.collect import Window
    tracing.enable(layout=pf.Layout.default(live_entries=int(os.environ["LIVE"])))
    w = Window(os.getpid(), "request", opened_late=True)
    w.poll()
    early = request("early").__enter__()         # 1: running as the window opens
    with request("before"):                       # 2: done before it
        pass
    w.open_edge()
    with request("inside"):                       # 3
        with request("nested"):                   # 4
            pass
    late = request("late").__enter__()            # 5: still running at the end
    early.__exit__(None, None, None)              # began before the window: not its own
    w.close_edge()
    rw = w.request_window()
    print(json.dumps({"count": rw.count, "holds": [i for i in range(1, 7) if rw.holds(i)],
                      "running": sorted(rw.running_at_end), "unlisted": rw.unlisted,
                      "names": {k: w.view.request_names.get(k) for k in (3, 4, 5)},
                      "edges": rw.start_ns < rw.end_ns}))
""")


def _window(live_entries: int) -> dict:
    out = subprocess.run([PY, "-c", WINDOW], capture_output=True, text=True, timeout=60,
                         env={**__import__("os").environ, "LIVE": str(live_entries)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_window_holds_the_requests_that_began_and_ended_inside_it():
    w = _window(8192)
    assert w == {"count": 2, "holds": [3, 4], "running": [5], "unlisted": 0,
                 "names": {"3": "inside", "4": "nested", "5": "late"}, "edges": True}


def test_a_full_table_of_running_requests_is_said_not_hidden():
    # two entries: "early" and "inside" fill it, so "nested" goes unlisted (and the counter
    # says so: a count may be off by that many); "late" finds the entry "inside" left
    w = _window(2)
    assert w["unlisted"] == 1 and w["running"] == [5] and w["count"] == 2


def test_per_request_figures_are_over_the_window_and_edge_requests_are_told():
    raw = RawCounts(backend="bpf", by=REQUEST)
    raw.window = RequestWindow(first_after=10, last_id=20, running_at_end={20}, count=9,
                               start_ns=1, end_ns=2)
    for rid in range(11, 20):                   # the window's 9 requests: one sendto each
        raw.add_cell(REQUEST, rid, "sendto", 1)
    raw.add_cell(REQUEST, 10, "sendto", 1)      # began before the window
    raw.add_cell(REQUEST, 20, "sendto", 2)      # still running at its end
    raw.add_cell(LOOP, 0, "epoll_wait", 9)
    raw.request_names.update({rid: "GET /x" for rid in range(11, 18)})    # two names lost
    rep = build_report(raw, target="t", pid=1)
    assert rep.requests == 9
    d = rep.per_request.by_name["sendto"]
    assert (d.mean, d.max, d.total) == (1.0, 1, 9)
    assert rep.total_calls == 9 + 1 + 2 + 9 and rep.requests_across_edges == 2
    assert any("2 requests ran across the window's edges" in n and "their 3 syscalls" in n
               for n in rep.notes)
    assert {r.name: r.requests for r in rep.by_route} == {"GET /x": 7, "(unnamed)": 2}
    assert (rep.window_start_ns, rep.window_end_ns) == (1, 2)
