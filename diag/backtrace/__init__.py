"""``coroscope bt``: coroutine backtraces of a live process or a core file, through gdb."""
