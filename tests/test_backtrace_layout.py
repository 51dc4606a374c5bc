"""The CPython 3.11 offset table (used when the interpreter has no debug info) against reality.

Every offset in gdb/coroscope_layout_py311.py is compared with the DWARF of the installed
interpreter (libpython and the _asyncio extension), the enum constants with their DWARF
values, and the #define constants with the installed headers and the dis module.
"""
from __future__ import annotations

import dis
import json
import re
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.capabilities import require, run

ROOT = Path(__file__).resolve().parent.parent
GDB_DIR = ROOT / "gdb"
sys.path.insert(0, str(GDB_DIR))
import coroscope_layout_py311 as table  # noqa: E402

sys.path.remove(str(GDB_DIR))

SCRIPT = r"""
import json, sys
sys.path.insert(0, {gdb_dir!r})
import gdb
import coroscope_layouts as L
import coroscope_layout_py311 as T
measured = {{name: L.dwarf_offset(t, p) for name, (t, p) in L.FIELDS.items()}}
enums = {{}}
for name in ("FRAME_CREATED", "FRAME_SUSPENDED", "FRAME_EXECUTING", "FRAME_CLEARED",
             "STATE_PENDING", "STATE_CANCELLED", "STATE_FINISHED"):
    enums[name] = int(gdb.parse_and_eval("(int)" + name))
print("LAYOUT-JSON " + json.dumps({{"fields": measured, "enums": enums, "names": sorted(L.FIELDS)}}))
"""


def libpython() -> Path:
    path = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME")
    if not path.exists():
        pytest.skip(f"no shared libpython at {path}")
    return path


def asyncio_extension() -> Path:
    import _asyncio
    return Path(_asyncio.__file__)


@pytest.fixture(scope="module")
def dwarf(tmp_path_factory):
    require("gdb")
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the table under test is for CPython 3.11")
    script = tmp_path_factory.mktemp("layout") / "dump.py"
    script.write_text(SCRIPT.format(gdb_dir=str(GDB_DIR)))
    r = run(["gdb", "-nx", "-batch", "-iex", "set auto-load off", "-ex", f"file {libpython()}",
             "-ex", f"add-symbol-file {asyncio_extension()}", "-ex", f"source {script}"], timeout=120)
    lines = [l for l in r.stdout.splitlines() if l.startswith("LAYOUT-JSON ")]
    assert lines, r.stderr[-2000:]
    doc = json.loads(lines[0][len("LAYOUT-JSON "):])
    if all(v is None for v in doc["fields"].values()):
        pytest.skip("this interpreter has no debug info to compare with")
    return doc


def test_table_names_every_field(dwarf):
    assert sorted(table.OFFSETS) == dwarf["names"]


def test_every_offset_matches_dwarf(dwarf):
    wrong = {name: (table.OFFSETS[name], measured) for name, measured in dwarf["fields"].items()
             if measured != table.OFFSETS[name]}
    assert wrong == {}


def test_enum_constants_match_dwarf(dwarf):
    assert {k: table.CONSTANTS[k] for k in dwarf["enums"]} == dwarf["enums"]


def test_define_constants_match_headers_and_dis():
    include = Path(sysconfig.get_config_var("INCLUDEPY"))
    member_h = (include / "structmember.h").read_text()
    for name in ("T_OBJECT", "T_OBJECT_EX", "T_DOUBLE"):
        assert int(re.search(rf"#define {name}\s+(\d+)", member_h).group(1)) == table.CONSTANTS[name]
    object_h = (include / "object.h").read_text()
    assert int(re.search(r"#define Py_TPFLAGS_MANAGED_DICT \(1 << (\d+)\)", object_h).group(1)) == \
        table.CONSTANTS["Py_TPFLAGS_MANAGED_DICT"].bit_length() - 1
    assert set(table.CONSTANTS["RESUME_OPCODES"]) == {dis.opmap["RESUME"], dis._all_opmap["RESUME_QUICK"]}
    assert table.CONSTANTS["PyLong_SHIFT"] == sys.int_info.bits_per_digit
