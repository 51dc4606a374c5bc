"""The injection path every `coroscope ... -- CMD` command uses to switch features on in a target."""
import subprocess
import sys
import textwrap

from diag.bootstrap import target_environment


def _run(code, env, cwd):
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_no_variables_means_nothing_changes(tmp_path):
    env = target_environment({"PATH": "/usr/bin:/bin"})
    out = _run("import sys; print('sitecustomize' in sys.modules, 'runtime' in sys.modules)", env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]
    assert out.stderr == ""


def test_the_targets_own_sitecustomize_still_runs(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "sitecustomize.py").write_text("import builtins\nbuiltins.USER_SITE_RAN = True\n")
    env = target_environment({"PATH": "/usr/bin:/bin", "PYTHONPATH": str(user)})
    out = _run("import builtins; print(getattr(builtins, 'USER_SITE_RAN', False))", env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_a_failing_hook_is_reported_in_one_line_and_the_program_runs(tmp_path):
    fake = tmp_path / "fake"
    (fake / "runtime").mkdir(parents=True)
    (fake / "runtime" / "__init__.py").write_text(textwrap.dedent("""
        def install_from_env():
            raise RuntimeError("boom")
    """))
    env = target_environment({"PATH": "/usr/bin:/bin"}, loop="runtime")
    # The fake package shadows the real runtime: put it first.
    env["PYTHONPATH"] = env["PYTHONPATH"].split(":", 1)[0] + ":" + str(fake)
    out = _run("print('still running')", env, tmp_path)
    assert out.returncode == 0
    assert out.stdout.strip() == "still running"
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "runtime.install_from_env failed" in lines[0] and "boom" in lines[0]
