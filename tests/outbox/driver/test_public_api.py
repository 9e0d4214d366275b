"""The driver layer uses SQLAlchemy's public API only: it imports no private module or
name, and reads no private attribute of another object (a Connection's
`_handle_dbapi_exception`, a compiled statement's `__[POSTCOMPILE_x]` placeholders are
SQLAlchemy's to change in any release)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DRIVER = Path(__file__).resolve().parents[3] / "outbox" / "driver"
MODULES = sorted(DRIVER.glob("*.py"))


def private_uses(source: str) -> list[str]:
    """Each private import or private attribute of another object in `source`, as
    `line: what`; `self._x` and `cls._x` are the module's own."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = [*node.module.split("."), *(alias.name for alias in node.names)]
            if any(part.startswith("_") and part != "__future__" for part in parts):
                found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(part.startswith("_") for part in alias.name.split(".")):
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Constant) and "POSTCOMPILE" in str(node.value):
            found.append(f"{node.lineno}: {node.value!r}")
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_a_module_of_the_driver_layer_uses_no_private_api(path):
    assert private_uses(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "connection._handle_dbapi_exception(exc, sql, params, cursor, context)\n",
        "from sqlalchemy.engine.base import _private\n",
        "from sqlalchemy.sql._typing import _ColumnExpressionArgument\n",
        "import sqlalchemy.sql._elements_constructors\n",
        "sql = text.replace('__[POSTCOMPILE_ids]', '%(ids)s')\n",
    ],
)
def test_a_private_use_is_found(source):
    assert private_uses(source) != []


def test_the_module_s_own_private_names_are_its_own():
    assert private_uses("self._driver.execute(sql)\ncls._built = {}\nx.__class__\n") == []
