"""The reference-import helper: isolation between repositories and clear errors."""

import sys

import pytest

from tests.refs import RefMismatch, import_ref, ref_attr, stub_module

E2VID = "uzh-rpg+rpg_e2vid"


def test_missing_module_names_the_file():
    with pytest.raises(RefMismatch, match=r"no_such_module.*missing from reference"):
        import_ref(E2VID, "model.no_such_module")


def test_missing_name_names_the_file():
    module = import_ref(E2VID, "model.submodules")
    with pytest.raises(RefMismatch, match=r"submodules\.py: reference has no 'NoSuchLayer'"):
        ref_attr(module, "NoSuchLayer")


def test_imports_leave_no_trace():
    before = set(sys.modules)
    import_ref(E2VID, "model.submodules", stubs={"unused_stub": stub_module("unused_stub")})
    assert "model" not in set(sys.modules) - before
    assert "unused_stub" not in sys.modules
