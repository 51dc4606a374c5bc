"""fds and leaks: the live fd inventory, who opened each fd, the cycle leak checker, fd trends.

    inventory.py      /proc/PID/fd + fdinfo + /proc/PID/net/* -> Inventory rows (no syscall in the target)
    fdtrack.py        in-process tracking of the stack that opened each fd / thread / process / task
    probe_origins.py  the same stacks for another process, from its probe file's fd-origin table
    leaks.py          snapshots, goleak-style settling, the cycle runner (run_cycles)
    cycle_child.py    the child process ``coroscope leaks`` runs a cycle function in
    trend.py          fd counts by kind over time and the growth warning (for the dashboard)
    render.py         text views
    command_fds.py, command_leaks.py   ``coroscope fds`` and ``coroscope leaks``

The pytest plugin is ``diag/pytest_plugin.py``; the report model is ``diag/model/fds.py``.
"""
