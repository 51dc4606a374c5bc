"""The `coroscope` dispatcher: help, unknown commands, and one line per error."""
import subprocess
import sys

from diag import cli


def coroscope(*args):
    return subprocess.run([sys.executable, "-m", "diag.cli", *args], capture_output=True, text=True, timeout=60)


def test_help_lists_every_command():
    out = coroscope("--help")
    assert out.returncode == 0
    for name in cli.COMMANDS:
        assert name in out.stdout


def test_unknown_command_is_one_line_and_exit_2():
    out = coroscope("frobnicate")
    assert out.returncode == 2
    assert "unknown command 'frobnicate'" in out.stderr
    assert "Traceback" not in out.stderr


def test_every_command_module_exists_and_has_configure_and_main():
    import importlib
    for name, (module_name, _help) in cli.COMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(module.configure) and callable(module.main), name
