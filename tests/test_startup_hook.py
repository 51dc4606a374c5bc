"""The start-up hook the distribution installs (diag/bootstrap/startup.py, coroscope-startup.pth):
every Python process of the environment switched on by COROSCOPE_* alone, and untouched without."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from diag.bootstrap import startup

ROOT = Path(__file__).resolve().parents[1]
CHECK = ("import sys, os; from pathlib import Path; "
         "print(sorted(m for m in ('diag', 'runtime', 'asyncio') if m in sys.modules)); "
         "from runtime import probefile as pf; print(bool(pf.region_paths(os.getpid())))")


# runtime.run() under tracing: prints the loop kind the probe header names
RUNTIME_LOOP_KIND = ("import os, runtime\n"
                     "from diag import probe\n"
                     "async def main():\n"
                     "    with probe.attach(os.getpid()) as r:\n"
                     "        print(r.header.loop_kind)\n"
                     "runtime.run(main())\n")


def _run(code: str, env_extra: dict, *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COROSCOPE_")}
    env.pop("PYTHONPATH", None)
    env.update(env_extra)
    return subprocess.run([sys.executable, *flags, "-c", code], env=env, cwd="/", capture_output=True,
                          text=True, timeout=60)


def test_the_hook_is_installed_in_this_environment_as_written():
    pth = Path(sysconfig.get_paths()["purelib"]) / "coroscope-startup.pth"
    assert pth.read_text() == startup.PTH_LINE
    assert (ROOT / "diag" / "bootstrap" / "coroscope-startup.pth").read_text() == startup.PTH_LINE


def test_with_the_variables_unset_nothing_of_coroscope_is_imported():
    out = _run(CHECK, {})
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "False"]


def test_another_coroscope_variable_switches_nothing_on():
    # the .pth line only scans for the prefix; run() then reads the four variables themselves
    out = _run(CHECK, {"COROSCOPE_AUTO_REQUESTS": "0"})
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.split("\n")[:2] == ["['diag']", "False"]


def test_coroscope_trace_alone_traces_a_plain_asyncio_program():
    code = ("import asyncio, os\n"
            "from diag import probe\n"
            "async def main():\n"
            "    with probe.attach(os.getpid()) as r:\n"
            "        print(r.header.loop_kind, r.counters()['tasks_created'])\n"
            "asyncio.run(main())\n")
    out = _run(code, {"COROSCOPE_TRACE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["asyncio", "1"], out.stdout + out.stderr


def test_the_header_names_the_loop_that_runs_not_the_one_asked_for():
    out = _run(RUNTIME_LOOP_KIND, {"COROSCOPE_TRACE": "1", "COROSCOPE_LOOP": "asyncio"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["runtime"]


def test_a_loop_the_program_makes_itself_is_traced_and_named_whatever_was_asked_for():
    # uvicorn --loop asyncio: asyncio.Runner with SelectorEventLoop as its factory, bypassing the
    # policy COROSCOPE_LOOP=runtime installed
    code = ("import asyncio, os\n"
            "from diag import probe\n"
            "async def main():\n"
            "    with probe.attach(os.getpid()) as r:\n"
            "        print(r.header.loop_kind, r.counters()['tasks_created'])\n"
            "with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:\n"
            "    runner.run(main())\n")
    out = _run(code, {"COROSCOPE_TRACE": "1", "COROSCOPE_LOOP": "runtime"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["asyncio", "1"], out.stdout + out.stderr


def test_runtime_run_honours_coroscope_trace_without_the_hook():
    # -S: no site, so no .pth is run; the checkout on PYTHONPATH, as a user without coroscope
    # installed in that interpreter would have it
    paths = [str(ROOT), sysconfig.get_paths()["purelib"]]
    out = _run(RUNTIME_LOOP_KIND, {"COROSCOPE_TRACE": "1", "PYTHONPATH": os.pathsep.join(paths)}, "-S")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["runtime"]


def test_a_failing_hook_says_so_in_one_line_and_the_program_runs():
    out = _run("print('still running')", {"COROSCOPE_LOOP": "no-such-loop"})
    assert out.returncode == 0
    assert out.stdout.strip() == "still running"
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coroscope: ") and "no-such-loop" in lines[0], out.stderr


def test_a_built_wheel_carries_the_hook_at_the_top_of_site_packages(tmp_path):
    # built from a copy of the tracked files: a build leaves build/ behind in the tree it builds
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    files = [name for name in files if name and (ROOT / name).is_file()]
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes((ROOT / name).read_bytes())
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                          str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)

    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("coroscope-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert z.read("coroscope-startup.pth").decode() == startup.PTH_LINE
        record = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))).decode()
    assert "coroscope-startup.pth," in record
