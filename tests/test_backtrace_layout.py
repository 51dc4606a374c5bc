"""The CPython offset tables (used when the interpreter has no debug info) against reality.

Every table in gdb/coroscope_layout_py*.py loads in plain Python (no gdb: the layer is shared with
readers outside gdb) and names every field and constant.  The table of the interpreter running
the suite is then compared with that interpreter's DWARF (libpython and the _asyncio
extension): every offset, every member a table says does not exist in its version, the enum
constants; and the #define constants with the installed headers and the dis module.  The suite
runs on 3.11, 3.12 and 3.13, so each table is checked on its own version.
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
import coroscope_layouts as layouts  # noqa: E402

sys.path.remove(str(GDB_DIR))

VERSION = sys.version_info[:2]

SCRIPT = r"""
import json, sys
sys.path.insert(0, {gdb_dir!r})
import gdb
import coroscope_dwarf as D
import coroscope_layouts as L
T = L.table_for({version!r})
measured = {{name: D.offset(*L.member(T, name)) for name in L.FIELDS}}
# Where a table says a member does not exist, look for it under its 3.11 name too.
absent = {{name: D.offset(*L.FIELDS[name]) for name in L.FIELDS if T.OFFSETS[name] is None}}
enums = {{}}
for name in ("FRAME_CREATED", "FRAME_SUSPENDED", "FRAME_SUSPENDED_YIELD_FROM", "FRAME_EXECUTING",
             "FRAME_CLEARED", "FRAME_OWNED_BY_CSTACK", "STATE_PENDING", "STATE_CANCELLED",
             "STATE_FINISHED"):
    try:
        enums[name] = int(gdb.parse_and_eval("(int)" + name))
    except gdb.error:
        enums[name] = None
print("LAYOUT-JSON " + json.dumps({{"fields": measured, "absent": absent, "enums": enums}}))
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
def table():
    if VERSION not in layouts.supported_versions():
        pytest.fail(f"no layout table for the CPython {VERSION} running the suite")
    return layouts.table_for(VERSION)


@pytest.fixture(scope="module")
def dwarf(tmp_path_factory, table):
    require("gdb")
    script = tmp_path_factory.mktemp("layout") / "dump.py"
    script.write_text(SCRIPT.format(gdb_dir=str(GDB_DIR), version=VERSION))
    r = run(["gdb", "-nx", "-batch", "-iex", "set auto-load off", "-ex", f"file {libpython()}",
             "-ex", f"add-symbol-file {asyncio_extension()}", "-ex", f"source {script}"], timeout=120)
    lines = [l for l in r.stdout.splitlines() if l.startswith("LAYOUT-JSON ")]
    assert lines, r.stderr[-2000:]
    doc = json.loads(lines[0][len("LAYOUT-JSON "):])
    if all(v is None for v in doc["fields"].values()):
        pytest.skip("this interpreter has no debug info to compare with")
    return doc


@pytest.mark.parametrize("version", layouts.supported_versions(), ids=lambda v: "%d.%d" % v)
def test_every_table_loads_without_gdb_and_names_everything(version):
    assert "gdb" not in sys.modules  # the layer is plain Python
    t = layouts.table_for(version)
    assert t.VERSION == version
    assert sorted(t.OFFSETS) == sorted(layouts.FIELDS)
    assert sorted(t.CONSTANTS) == sorted(layouts.CONSTANT_NAMES)
    assert set(getattr(t, "DWARF_NAMES", {})) <= set(layouts.FIELDS)
    layout = layouts.load(version)
    assert layout.describe() == f"CPython {version[0]}.{version[1]}, offsets from table:{version[0]}.{version[1]}"
    assert layout.off == t.OFFSETS


def test_the_supported_versions():
    assert layouts.supported_versions() == [(3, 11), (3, 12), (3, 13)]
    with pytest.raises(layouts.UnsupportedVersion) as err:
        layouts.table_for((3, 10))
    assert str(err.value) == ("CPython 3.10 is not supported (no coroscope_layout_py310.py layout table; "
                              "supported: 3.11, 3.12, 3.13)")


def test_every_offset_matches_dwarf(table, dwarf):
    wrong = {name: (table.OFFSETS[name], measured) for name, measured in dwarf["fields"].items()
             if measured != table.OFFSETS[name]}
    assert wrong == {}


def test_members_the_table_calls_absent_are_absent(table, dwarf):
    assert dwarf["absent"] and all(v is None for v in dwarf["absent"].values()), dwarf["absent"]


def test_enum_constants_match_dwarf(table, dwarf):
    assert {k: table.CONSTANTS[k] for k in dwarf["enums"]} == dwarf["enums"]


def _define(text: str, name: str) -> int:
    """The value of ``#define NAME value``, following one level of ``#define NAME OTHER``."""
    value = re.search(rf"#define {name}\s+(\w+)", text).group(1)
    return int(value) if value.isdigit() else _define(text, value)


def test_define_constants_match_headers_and_dis(table):
    c = table.CONSTANTS
    include = Path(sysconfig.get_config_var("INCLUDEPY"))
    member_h = (include / "structmember.h").read_text() + (include / "descrobject.h").read_text()
    for name in ("T_OBJECT", "T_OBJECT_EX", "T_DOUBLE"):
        assert _define(member_h, name) == c[name]
    object_h = (include / "object.h").read_text()
    assert int(re.search(r"#define Py_TPFLAGS_MANAGED_DICT \(1 << (\d+)\)", object_h).group(1)) == \
        c["Py_TPFLAGS_MANAGED_DICT"].bit_length() - 1
    inline = re.search(r"#define Py_TPFLAGS_INLINE_VALUES \(1 << (\d+)\)", object_h)
    assert (1 << int(inline.group(1)) if inline else None) == c["Py_TPFLAGS_INLINE_VALUES"]
    opmap = getattr(dis, "_all_opmap", dis.opmap)
    assert set(c["RESUME_OPCODES"]) == {v for k, v in opmap.items() if k.startswith("RESUME") or k == "INSTRUMENTED_RESUME"}
    assert c["PyLong_SHIFT"] == sys.int_info.bits_per_digit
    import asyncio.tasks
    for name in c["ASYNCIO_TASK_WEAKSETS"] + c["ASYNCIO_TASK_SETS"]:
        assert hasattr(sys.modules["_asyncio"], name), name
