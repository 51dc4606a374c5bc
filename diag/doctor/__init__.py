"""``coroscope doctor``: one command that says what is wrong with a service under load.

Modules: ``command`` (the CLI and the terminal summary), ``diagnose`` (one service on one loop,
measured), ``load`` (the built-in client and wrk), ``measure`` (eBPF syscall counts, /proc),
``target`` (starting and stopping the service), ``findings`` (ranking), ``report_html`` (the
self-contained report). ``diag.check`` reuses load, measure and target.
"""
