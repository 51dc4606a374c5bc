"""The live data layer of `coroscope top`: events -> LiveState -> LiveSnapshot (never a view).

    events.py      the vocabulary LiveState consumes
    state.py       LiveState: running aggregates, snapshot(now)
    source.py      live (probe file + /proc + samplers) and replay sources of snapshots
    probe_adapter  probe-file records -> events (the one module that knows diag.probe)
    samplers.py    hot paths and syscalls per request, when their collectors are there
    fdsample.py    fd counts by kind from /proc/PID/fd
    recording.py   the versioned record/replay file format
"""
