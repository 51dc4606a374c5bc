"""Load the gdb scripts' CPython layout layer (gdb/coroscope_*.py) outside gdb.

There is one layout layer, the per-version tables and object readers in ``gdb/``, and two
readers of a target's memory: gdb (stopping the target, or a core file) and coroscope's own
process_vm_readv reader.  The scripts are plain modules, not a package (a package named ``gdb``
would shadow gdb's own module), and import each other by bare name, so the directory goes on
sys.path once, here, and nowhere else.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

GDB_DIR = Path(__file__).resolve().parent.parent.parent / "gdb"


def module(name: str):
    here = str(GDB_DIR)
    if here not in sys.path:
        sys.path.append(here)
    return importlib.import_module(name)
