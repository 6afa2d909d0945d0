"""One place for each rule in the app (issue 22): statuses are decided only in ``lib/http_errors.py``, MONAI Label's
internals are touched only from ``lib/monailabel_compat.py``, and that module refuses a MONAI Label version it was not
checked against. Static checks of the source: they fail when a new file breaks the rule."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import monailabel
import pytest

from tests.server import APP, app_module

STATUS_MAP = APP / "lib" / "http_errors.py"
COMPAT = APP / "lib" / "monailabel_compat.py"


def _app_files() -> list[Path]:
    return sorted(p for p in APP.rglob("*.py") if "__pycache__" not in p.parts)


def _code_ints(tree: ast.AST) -> list[tuple[int, int]]:
    """(line, value) of integer literals in code (docstrings and other strings are not code)."""
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and type(n.value) is int]


def test_http_statuses_are_decided_only_in_http_errors() -> None:
    found = []
    for path in _app_files():
        if path == STATUS_MAP:
            continue
        tree = ast.parse(path.read_text())
        found += [f"{path.relative_to(APP)}:{line} {value}" for line, value in _code_ints(tree) if 400 <= value < 600]
        found += [f"{path.relative_to(APP)}:{n.lineno} status_code=" for n in ast.walk(tree)
                  if isinstance(n, ast.keyword) and n.arg == "status_code" and isinstance(n.value, ast.Constant)]
        found += [f"{path.relative_to(APP)}:{n.lineno} HTTPException(...)" for n in ast.walk(tree)
                  if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) == "HTTPException"]
    assert found == []


def test_the_check_sees_a_status_literal() -> None:
    tree = ast.parse('raise HTTPException(status_code=404, detail="x")')
    assert _code_ints(tree) == [(1, 404)]


def _monailabel_private_names() -> set[str]:
    """Private attribute names MONAI Label's own code uses on ``self`` (its internal state and hooks)."""
    names: set[str] = set()
    for path in Path(monailabel.__file__).parent.rglob("*.py"):
        names.update(re.findall(r"self\.(_[a-z][a-z0-9_]*)", path.read_text(errors="ignore")))
    return names


def test_monailabel_internals_are_touched_only_from_the_compat_module() -> None:
    private = _monailabel_private_names()
    assert {"_datastore", "_infers", "_create_trainer", "_load_checkpoint", "_lock_file"} <= private
    found = []
    for path in _app_files():
        if path == COMPAT:
            continue
        source = path.read_text()
        tree = ast.parse(source)
        found += [f"{path.relative_to(APP)}:{n.lineno} .{n.attr}" for n in ast.walk(tree)
                  if isinstance(n, ast.Attribute) and n.attr in private]
        found += [f"{path.relative_to(APP)}:{m.lineno} def {m.name}" for n in ast.walk(tree)
                  if isinstance(n, ast.ClassDef) for m in n.body
                  if isinstance(m, ast.FunctionDef) and m.name in private]  # overriding a private hook
        for marker in ("monailabel.endpoints", "middleware_stack", "user_middleware", "monailabel.app",
                       "monailabel.interfaces.utils.app", "monailabel.interfaces.exception", "setattr("):
            if marker in source:
                found.append(f"{path.relative_to(APP)}: {marker}")
    assert found == []


@pytest.fixture()
def compat():
    return app_module("lib.monailabel_compat")


def test_start_up_refuses_an_unchecked_monailabel_version(compat) -> None:
    compat.check_version()  # the installed one is supported
    assert monailabel.__version__ in compat.SUPPORTED_VERSIONS
    with pytest.raises(compat.UnsupportedMONAILabel) as refused:
        compat.check_version("0.9.0")
    message = str(refused.value)
    assert "0.8.5" in message and "0.9.0" in message and "datastore" in message and "allow_unsupported" in message
    compat.check_version("0.9.0", allow=True)  # the admin's explicit choice: a warning, not a refusal
