"""Running coroscope as another user (uid nobody) in tests, wherever the checkout is.

A test that shows what a plain user gets (the ptrace fallback, "may not read the memory of pid
N") runs the CLI as nobody. That user cannot read a checkout inside a directory only its owner
may enter (a clone in root's home, 0700 by default), nor the virtual environment inside it: run
from there, ``python -m diag.cli`` fails with "No module named 'diag'". So the test runs a copy:
the project's packages and the libraries the CLI imports (found by importing its modules, not
listed by hand), in a fresh temporary directory nobody may read (0755 down to every file) and
which is removed afterwards, with an interpreter nobody can run that imports the copy (this
one's version when there is one).

Without root or setpriv, or with no interpreter nobody can run, the test skips with the reason;
under CI=true it fails instead (``tests.capabilities.unavailable``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.capabilities import require, run, unavailable

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
PROJECT_PACKAGES = ("diag", "runtime", "gdb", "dashboards")
# what the CLI's commands import when run as a plain user (the libraries they need come along)
CLI_MODULES = ("diag.cli", "diag.syscalls.collect", "diag.syscalls.ptrace", "diag.syscalls.render",
               "diag.backtrace.reader", "diag.probe", "diag.workers", "diag.procfs")
_IMPORTED_LIBRARIES = """
import importlib, os, sys
site = [os.path.realpath(p) + os.sep for p in sys.argv[1].split(os.pathsep)]
for name in sys.argv[2:]:
    importlib.import_module(name)
tops = set()
for module in list(sys.modules.values()):
    path = os.path.realpath(getattr(module, "__file__", None) or "")
    for base in site:
        if path.startswith(base):
            tops.add(path[len(base):].split(os.sep)[0])
print("\\n".join(sorted(tops)))
"""


@dataclass
class OtherUser:
    home: Path         # the copy: src/ (the project), site/ (its libraries), work/ (nobody's own, 0700)
    python: str        # an interpreter nobody can run, that imports the copy
    uid: int = NOBODY

    @property
    def src(self) -> Path:
        return self.home / "src"

    @property
    def work(self) -> Path:
        """A directory the user owns (mode 0700): where it writes its files."""
        return self.home / "work"

    def argv(self, *args: str) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", self.python, *args]

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.work),
                "PYTHONPATH": os.pathsep.join([str(self.src), str(self.home / "site")]), **extra}

    def coroscope(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        """``coroscope ARGS`` as this user, from the copy."""
        return run(self.argv("-m", "diag.cli", *args), timeout=timeout, cwd=self.src, env=self.env())


def _site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), symlinks=False)
    else:
        shutil.copy2(src, dst)


def _open_to_all(top: Path) -> None:
    """0755 directories, 0644 files (0755 if executable): whatever the umask of the clone was."""
    for dirpath, dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)


def _runs_the_copy(uid: int, python: str, home: Path, modules: tuple[str, ...]) -> bool:
    """The user can run ``python``, it may run itself (the CLI checks a command with
    shutil.which), and it imports the CLI's modules from the copy."""
    check = ("import importlib, os, sys\n"
             "assert os.access(sys.executable, os.X_OK), sys.executable\n"
             "for name in sys.argv[1:]:\n    importlib.import_module(name)\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": os.pathsep.join([str(home / "src"), str(home / "site")])}
    try:
        r = run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", python, "-c", check,
                 *modules], timeout=60, cwd=home / "src", env=env)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _interpreter(uid: int, home: Path, modules: tuple[str, ...]) -> str | None:
    """This interpreter if the user can run it with the copy, else a system one of the same
    version, else a system one of another version that imports the copy as well (what these
    tests check does not depend on the version: pyenv's 3.12 and 3.13 under root's 0700 home
    cannot load their libpython as another user)."""
    ver = "%d.%d" % sys.version_info[:2]
    candidates = [getattr(sys, "_base_executable", "") or "", os.path.realpath(sys.executable),
                  f"/usr/bin/python{ver}", f"/usr/local/bin/python{ver}",
                  *sorted(str(p) for p in Path("/usr/bin").glob("python3.1[0-9]")), "/usr/bin/python3"]
    for python in dict.fromkeys(c for c in candidates if c and os.path.exists(c)):
        if _runs_the_copy(uid, python, home, modules):
            return python
    return None


@contextlib.contextmanager
def other_user(uid: int = NOBODY, modules: tuple[str, ...] = CLI_MODULES):
    """An ``OtherUser`` for the test's duration; its directory is removed afterwards."""
    require("root")
    if shutil.which("setpriv") is None:
        unavailable("setpriv (util-linux) is not installed")
    home = Path(tempfile.mkdtemp(prefix="coroscope-other-user-"))
    try:
        (home / "src").mkdir()
        (home / "site").mkdir()
        for name in PROJECT_PACKAGES:
            if (ROOT / name).exists():
                _copy(ROOT / name, home / "src" / name)
        site = _site_dirs()
        found = run([sys.executable, "-c", _IMPORTED_LIBRARIES, os.pathsep.join(site), *modules],
                    timeout=60, cwd=ROOT)
        if found.returncode != 0:
            raise RuntimeError(f"cannot import the CLI's modules: {found.stderr}")
        for top in found.stdout.split():
            for base in site:
                if os.path.exists(os.path.join(base, top)):
                    _copy(Path(base) / top, home / "site" / top)
                    break
        _open_to_all(home)
        (home / "work").mkdir(mode=0o700)
        os.chown(home / "work", uid, uid)
        python = _interpreter(uid, home, modules)
        if python is None:
            unavailable(f"no CPython that uid {uid} may run and that imports coroscope's CLI "
                        f"(this one is {os.path.realpath(sys.executable)})")
        yield OtherUser(home, python, uid)
    finally:
        shutil.rmtree(home, ignore_errors=True)
