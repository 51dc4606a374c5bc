"""Imported by Python at start-up in a target that coroscope launched with this directory first on
its PYTHONPATH (see diag.bootstrap). It runs the same start-up hook as the .pth file the
distribution installs (``diag.bootstrap.startup``; it runs once however it is reached), for
interpreters that do not have coroscope installed, then hands over to the sitecustomize the target
would have imported without us.
"""
import importlib
import os
import sys


def _run_startup_hook():
    try:
        from diag.bootstrap import startup
    except Exception as exc:  # noqa: BLE001 - the target must run on whatever happens here
        print(f"coroscope: the start-up hook could not be loaded: {exc!r}", file=sys.stderr)
        return
    startup.run()


def _chain_to_next_sitecustomize():
    """Import the sitecustomize the target would have imported without us, if there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    saved_path = list(sys.path)
    ours = sys.modules.pop("sitecustomize", None)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    finally:
        sys.path[:] = saved_path
        if ours is not None:
            sys.modules["sitecustomize"] = ours


_run_startup_hook()
_chain_to_next_sitecustomize()
