"""``coroscope syscalls``: syscalls per request, per task or per thread, exactly, with hints.

How the package is cut (one concern per module):
    command.py    the CLI (configure/main); nothing else imports it
    collect.py    one measurement: choose the backend, start or find the target, count, report
    bpf.py        the eBPF backend (bcc): the program text and reading its maps
    ptrace.py     the fallback backend (strace): exact per thread, requests only amortized
    slots.py      the target's probe file as the counter needs it: slot addresses, requests done
    counts.py     RawCounts: what either backend hands to the aggregator
    aggregate.py  RawCounts -> diag.model.syscalls.SyscallReport (direct and amortized counts)
    hints.py      the anti-patterns the numbers show (allocation churn, re-registration, ...)
    render.py     the terminal view (rich); compare.py: the same command on several loops
"""
