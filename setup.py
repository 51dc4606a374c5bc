"""Installs coroscope's start-up hook, ``coroscope-startup.pth``, beside the packages.

Everything else about the distribution is in pyproject.toml. A .pth file has to sit at the top
of site-packages, where no package's data goes, so the build copies it there itself: into the
wheel (``pip install .``) and into the editable wheel (``pip install -e .``). What the hook does,
and why it costs nothing when coroscope's variables are unset: diag/bootstrap/startup.py.
"""
import os

from setuptools import Extension, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = os.path.join("diag", "bootstrap", "coroscope-startup.pth")


class build_py_with_startup_hook(build_py):
    def run(self):
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, os.path.basename(PTH)),
                       preserve_mode=False)

    def get_outputs(self, include_bytecode=1):
        return [*super().get_outputs(include_bytecode),
                os.path.join(self.build_lib, os.path.basename(PTH))]

    def get_output_mapping(self):
        mapping = dict(super().get_output_mapping())
        mapping[os.path.join(self.build_lib, os.path.basename(PTH))] = PTH
        return mapping


class editable_wheel_with_startup_hook(editable_wheel):
    """An editable install links or points at the packages, never at build_py's extra outputs,
    so the hook is written into the editable wheel beside whatever its strategy writes."""

    def _select_strategy(self, *args, **kwargs):
        return _AlsoWriteHook(super()._select_strategy(*args, **kwargs))


class _AlsoWriteHook:
    def __init__(self, strategy):
        self.strategy = strategy

    def __enter__(self):
        self.strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self.strategy.__exit__(*exc)

    def __call__(self, wheel, files, mapping):
        self.strategy(wheel, files, mapping)
        with open(PTH, encoding="utf-8") as f:
            wheel.writestr(os.path.basename(PTH), f.read())


# The runtime's C accelerator (runtime/accel.py says when it is used). optional: an install
# without a compiler still works, on the pure-Python paths.
SPEEDUPS = Extension("runtime._speedups", ["runtime/_speedups.c"], optional=True,
                     extra_compile_args=["-O2"])

setup(cmdclass={"build_py": build_py_with_startup_hook,
                "editable_wheel": editable_wheel_with_startup_hook},
      ext_modules=[SPEEDUPS])
