"""bcc, imported in one place.

The eBPF backends use Debian's python3-bpfcc (the PyPI "bcc" is another project; the Makefile
exposes Debian's package to each venv). Its source predates CPython 3.12's SyntaxWarning for
invalid escape sequences, so compiling it on 3.12 and 3.13 prints a warning on stderr: ahead of
coroscope's first line, inside the user's output, about a system package neither they nor we
maintain. The warnings are silenced while bcc is imported, and only then.
"""
from __future__ import annotations

import functools
import warnings


@functools.cache
def import_bcc():
    """The bcc module (with bcc.syscall loaded); ImportError or OSError as bcc raises them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        import bcc
        import bcc.syscall  # noqa: F401
    return bcc
