"""Imported by Python at start-up in a target that coroscope launched (see diag.bootstrap).

Each hook reads its own COROSCOPE_* variables and does nothing when they are unset. A hook that
fails says so in one line on stderr and the program runs on without it: a diagnosis tool must
not stop the service it diagnoses.
"""
import importlib
import os
import sys

# (variable that switches it on, module, function) in the order they must run: the loop policy
# before the tracepoints, which may look at it.
_HOOKS = (
    ("COROSCOPE_LOOP", "runtime", "install_from_env"),
    ("COROSCOPE_TRACE", "runtime.tracing", "enable_from_env"),
    ("COROSCOPE_TRACE", "diag.instrument", "install_from_env"),
    ("COROSCOPE_FDTRACK", "diag.fds.fdtrack", "install_from_env"),
    ("COROSCOPE_SAMPLER", "diag.flame.sampler", "install_from_env"),
)


def _run_hooks():
    for variable, module_name, function in _HOOKS:
        if not os.environ.get(variable):
            continue
        try:
            getattr(importlib.import_module(module_name), function)()
        except Exception as exc:  # noqa: BLE001 - the target must run on whatever happens here
            print(f"coroscope: {module_name}.{function} failed in the target: {exc!r}", file=sys.stderr)


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


_run_hooks()
_chain_to_next_sitecustomize()
