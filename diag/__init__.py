"""coroscope's collector: syscalls per request, fds and leaks, flame graphs, backtraces, checks.

Every collector produces plain dataclasses from ``diag.model``; views (the terminal, the
dashboard, the HTML report, the CI gate) render those and compute nothing of their own.
"""
