"""coroscope's gdb commands for asyncio tasks.  Load with:  (gdb) source gdb/coroscope.py

Then: coro list [--group] | coro bt [ID|all] | coro tree | coro locals ID [FRAME] | coro json.
The scripts beside this one are plain files, not a package (a package named ``gdb`` would shadow
gdb's own module); this entry script puts its own directory on sys.path so they import each other.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import coroscope_commands  # noqa: E402

if not getattr(sys.modules.get("coroscope_commands"), "_registered", False):
    coroscope_commands.register()
    coroscope_commands._registered = True
