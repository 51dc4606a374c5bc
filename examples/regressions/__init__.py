"""Planted regressions: the example service with one defect each, for ``coroscope check``.

Each module runs ``examples.http_service`` with a ``Plant`` that adds exactly one defect:

    extra_syscall   one more syscall per request (getppid)
    fd_leak         one fd opened per connection and never closed
    task_leak       one task started per connection and never cancelled (it stays pending)
    blocking        the loop blocked for 200 ms on each connection's first request

Run one with ``python -m examples.regressions.<name> [service flags]``. ``coroscope check``
must fail on each, naming it, and pass on the clean service.
"""
