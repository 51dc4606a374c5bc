"""What the start-up hook costs every Python process of an environment that does not use it.

    python -m benchmarks.startup [--runs 300] [--json FILE]

The hook (diag/bootstrap/startup.py) is a .pth line that Python runs in every process of the
environment coroscope is installed in; with the COROSCOPE_* variables unset it must cost nothing
measurable. This starts Python in two throwaway virtual environments made from the interpreter
running this, identical but for ``coroscope-startup.pth``: both have a .pth putting this
checkout on the path (an editable install's, minus its finder), one also has the hook. Two
programs: ``pass`` (the bare interpreter, where any cost shows most) and ``import asyncio`` (the
least an async service does). Runs alternate between the two environments, one of each per
round, so drift on a busy machine lands on both; the figure is the ratio of medians with a
bootstrap 95% interval over rounds, and the verdict says whether that interval includes 1.
Where valgrind is installed, instructions under callgrind are counted too: deterministic, so
they show the hook's cost even where the clock cannot (what it costs is compiling its one line:
Python has no cache for .pth lines).
"""
from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from benchmarks.procs import callgrind_instructions

ROOT = Path(__file__).resolve().parents[1]
PTH = ROOT / "diag" / "bootstrap" / "coroscope-startup.pth"


# The least a .pth line that runs can cost: compiling one statement that does nothing. Counted
# (instructions only) to show how much of the hook's cost any .pth hook would pay.
FLOOR_LINE = "import posix\n"


def make_env(where: Path, pth_line: str | None) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "coroscope-checkout.pth").write_text(f"{ROOT}\n{sysconfig.get_paths()['purelib']}\n")
    if pth_line is not None:
        (Path(purelib) / PTH.name).write_text(pth_line)
    return python


PROGRAMS = {"bare": "pass", "asyncio": "import asyncio"}


def time_start(python: Path, env: dict, program: str = "pass") -> float:
    t0 = time.perf_counter()
    subprocess.run([str(python), "-c", program], env=env, check=True)
    return time.perf_counter() - t0


def instructions(python: Path, env: dict, program: str) -> int | None:
    """Instructions of one start under callgrind, or None without valgrind (or if it failed).
    The hash seed is fixed: with a random one the count moves by some 50 k from run to run
    (dict probing), a tenth of what the hook costs."""
    import shutil
    if shutil.which("valgrind") is None:
        return None
    try:
        return callgrind_instructions([str(python), "-c", program], env={**env, "PYTHONHASHSEED": "0"})
    except RuntimeError:
        return None


def bootstrap_ratio(with_hook: list[float], without: list[float], draws: int = 2000,
                    seed: int = 1) -> tuple[float, float, float]:
    """Ratio of medians (with / without) and its 2.5 / 97.5 percentiles, resampling rounds."""
    rng = random.Random(seed)
    pairs = list(zip(with_hook, without))
    ratios = []
    for _ in range(draws):
        sample = [pairs[rng.randrange(len(pairs))] for _ in pairs]
        ratios.append(statistics.median(a for a, _ in sample) / statistics.median(b for _, b in sample))
    ratios.sort()
    point = statistics.median(with_hook) / statistics.median(without)
    return point, ratios[int(0.025 * draws)], ratios[int(0.975 * draws) - 1]


def measure(runs: int) -> dict:
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith("COROSCOPE_")}
    env.pop("PYTHONPATH", None)
    results = {}
    with tempfile.TemporaryDirectory(prefix="coroscope-startup-") as tmp:
        hooked = make_env(Path(tmp) / "with", PTH.read_text())
        plain = make_env(Path(tmp) / "without", None)
        floor = make_env(Path(tmp) / "floor", FLOOR_LINE)
        for name, program in PROGRAMS.items():
            for python in (hooked, plain):          # warm the page cache and .pyc files
                for _ in range(5):
                    time_start(python, env, program)
            with_hook, without = [], []
            for i in range(runs):
                order = (hooked, plain) if i % 2 == 0 else (plain, hooked)
                for python in order:
                    (with_hook if python is hooked else without).append(
                        time_start(python, env, program))
            point, low, high = bootstrap_ratio(with_hook, without)
            ins_with, ins_without = instructions(hooked, env, program), instructions(plain, env, program)
            results[name] = {
                "program": program, "runs": runs,
                "median_ms_with_hook": statistics.median(with_hook) * 1e3,
                "median_ms_without": statistics.median(without) * 1e3,
                "ratio": point, "ratio_low": low, "ratio_high": high,
                "within_noise": low <= 1.0 <= high,
                "instructions_with_hook": ins_with, "instructions_without": ins_without,
                "instructions_floor": instructions(floor, env, program),
            }
    return results


def render(results: dict) -> str:
    lines = [f"interpreter start-up, hook installed and COROSCOPE_* unset, against no hook "
             f"(alternating runs)"]
    for r in results.values():
        verdict = "within noise" if r["within_noise"] else "outside the spread"
        lines.append(f"  python -c {r['program']!r:<17} {r['median_ms_without']:6.2f} ms -> "
                     f"{r['median_ms_with_hook']:6.2f} ms  {r['ratio']:.3f}x "
                     f"(95% {r['ratio_low']:.3f}-{r['ratio_high']:.3f}, {r['runs']} runs each): {verdict}")
        if r["instructions_with_hook"] and r["instructions_without"]:
            extra = r["instructions_with_hook"] - r["instructions_without"]
            lines.append(f"  {'':<28} instructions {r['instructions_without'] / 1e6:.2f} M -> "
                         f"{r['instructions_with_hook'] / 1e6:.2f} M (+{extra / 1e3:.0f} k, "
                         f"{r['instructions_with_hook'] / r['instructions_without']:.4f}x)")
            if r.get("instructions_floor"):
                lines.append(f"  {'':<28} a .pth line that runs nothing ({FLOOR_LINE.strip()!r}): "
                             f"+{(r['instructions_floor'] - r['instructions_without']) / 1e3:.0f} k")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    result = measure(args.runs)
    print(render(result))
    if args.json:
        from diag.model.base import write_json_atomic
        write_json_atomic(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
