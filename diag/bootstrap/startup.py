"""What the start-up hook does in a Python process whose environment asks for coroscope.

coroscope switches itself on from the environment, the way coverage.py measures subprocesses and
opentelemetry-instrument instruments a server: ``COROSCOPE_TRACE=1 uvicorn app:app``, a gunicorn
master and every worker it forks, ``python app.py``, a subprocess of a test. The distribution
installs ``coroscope-startup.pth`` into site-packages; Python runs the one line in it in every
process of that environment, before any user code. The line looks for a COROSCOPE_ variable
and, only if there is one, imports this module and calls ``run()``. With none set the cost is
compiling that line and one scan of the names: no import of coroscope (``benchmarks/startup.py``).

``run()`` does, in order, what each variable asks:

    COROSCOPE_LOOP      runtime | uvloop | asyncio: the event loop policy (runtime.install_from_env)
    COROSCOPE_TRACE     the probe (runtime.tracing), stock loops' tracepoints (diag.instrument),
                        and requests marked in the web servers the process imports
                        (diag.autoinstrument: uvicorn, hypercorn, aiohttp)
    COROSCOPE_FDTRACK   where every fd was opened (diag.fds.fdtrack)
    COROSCOPE_SAMPLER   the in-process await sampler (diag.flame.sampler)

The loop policy goes first, so that the hooks after it and the program run with the loop asked
for in place. A hook that fails says so in one line on stderr and the program runs on without
it: a diagnosis tool must not stop the service it diagnoses. ``run()`` is idempotent, because a
process can reach it twice: through the .pth and through ``diag/bootstrap/sitecustomize.py``,
which coroscope still puts on the PYTHONPATH of targets it starts so that an interpreter without
coroscope installed (another venv, the system Python with this checkout on its path) is switched
on the same way.
"""
from __future__ import annotations

import importlib
import os
import sys

VARIABLES = ("COROSCOPE_TRACE", "COROSCOPE_LOOP", "COROSCOPE_FDTRACK", "COROSCOPE_SAMPLER")

# (variable that switches it on, module, function), in the order they must run.
HOOKS = (
    ("COROSCOPE_LOOP", "runtime", "install_from_env"),
    ("COROSCOPE_TRACE", "runtime.tracing", "enable_from_env"),
    ("COROSCOPE_TRACE", "diag.instrument", "install_from_env"),
    ("COROSCOPE_TRACE", "diag.autoinstrument", "install_from_env"),
    ("COROSCOPE_FDTRACK", "diag.fds.fdtrack", "install_from_env"),
    ("COROSCOPE_SAMPLER", "diag.flame.sampler", "install_from_env"),
)

# The line Python runs from the .pth file (it must start with "import" to be executed). Python
# compiles it at every start, and compiling is most of what it costs, so it is the form with the
# fewest nodes found (callgrind, benchmarks/startup.py: +0.53 M instructions on a bare start,
# of which reading the file and compiling `import posix`, the least line that runs, is 0.27 M;
# testing the four names one by one cost 0.2 M more, and ending with `import` of a module that
# does the test, or a path line putting a `sitecustomize` on sys.path, no less: importing costs
# what compiling does, and a system sitecustomize (Debian's) would shadow the latter). It scans
# the names of the environment as the process got it (posix.environ: bytes, no encoding) for the
# prefix; ``run()`` then looks at the four variables themselves, so another COROSCOPE_ name costs
# an import and nothing else.
PTH_LINE = ("import posix;b'COROSCOPE_'in b''.join(posix.environ)"
            "and __import__('diag.bootstrap.startup').bootstrap.startup.run()\n")

_ran = False


def run() -> None:
    global _ran
    if _ran:
        return
    _ran = True
    for variable, module_name, function in HOOKS:
        if not os.environ.get(variable):
            continue
        try:
            getattr(importlib.import_module(module_name), function)()
        except Exception as exc:  # noqa: BLE001 - the target must run on whatever happens here
            print(f"coroscope: {module_name}.{function} failed in the target: {exc!r}", file=sys.stderr)
