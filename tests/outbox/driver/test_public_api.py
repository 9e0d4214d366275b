"""The driver layer, and outbox/claiming.py's own SQL constructs, use SQLAlchemy's public API
only: they import no private module or name, read no private attribute of another object
(a Connection's `_handle_dbapi_exception`, a compiled statement's `__[POSTCOMPILE_x]`
placeholders), and declare no private attribute of a SQLAlchemy class they derive from
(`_traverse_internals`): those are SQLAlchemy's to change in any release. The rest of
outbox/ is held to the rules about SQLAlchemy; whose private attribute `x._y` reads
(a namedtuple's public `_replace`, another library's) the source does not tell."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

OUTBOX = Path(__file__).resolve().parents[3] / "outbox"
MODULES = sorted([*(OUTBOX / "driver").glob("*.py"), OUTBOX / "claiming.py"])
OUTBOX_MODULES = sorted(OUTBOX.rglob("*.py"))


def private_uses(source: str) -> list[str]:
    """Each private import or private attribute of another object in `source`, as
    `line: what`, and each of `sqlalchemy_private_uses`; `self._x` and `cls._x` are the
    module's own."""
    found = sqlalchemy_private_uses(source)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and _private_import(node):
            found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(part.startswith("_") for part in alias.name.split(".")):
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.Attribute) and _private(node.attr) and not _own(node):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return sorted(set(found), key=lambda use: int(use.split(":")[0]))


def sqlalchemy_private_uses(source: str) -> list[str]:
    """Each use of SQLAlchemy's private API in `source`, as `line: what`: a private module
    or name imported from it, a POSTCOMPILE placeholder, a private name declared in a class
    derived from one of its classes."""
    tree = ast.parse(source)
    found = []
    imported = set()  # names bound to SQLAlchemy's modules and classes
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _of_sqlalchemy(node.module):
            imported.update(alias.asname or alias.name for alias in node.names)
            if _private_import(node):
                found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _of_sqlalchemy(alias.name):
                    imported.add(alias.asname or alias.name.split(".")[0])
                    if any(part.startswith("_") for part in alias.name.split(".")):
                        found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.Constant) and "POSTCOMPILE" in str(node.value):
            found.append(f"{node.lineno}: {node.value!r}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(_root(b) in imported for b in node.bases):
            found.extend(
                f"{node.lineno}: {node.name}.{name}" for name in _declared(node) if _private(name)
            )
    return found


def _own(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


def _of_sqlalchemy(module: str | None) -> bool:
    return module is not None and module.split(".")[0] == "sqlalchemy"


def _private_import(node: ast.ImportFrom) -> bool:
    parts = [*(node.module or "").split("."), *(alias.name for alias in node.names)]
    return any(part.startswith("_") and part != "__future__" for part in parts)


def _root(base: ast.expr) -> str | None:
    """The name a base class is reached from: `X` of `X`, `X[T]` and `X.Y`."""
    while isinstance(base, ast.Subscript | ast.Attribute):
        base = base.value
    return base.id if isinstance(base, ast.Name) else None


def _declared(node: ast.ClassDef) -> list[str]:
    """The names a class body binds: its attributes and methods."""
    names = []
    for statement in node.body:
        if isinstance(statement, ast.Assign):
            names += [t.id for t in statement.targets if isinstance(t, ast.Name)]
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            names.append(statement.target.id)
        elif isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            names.append(statement.name)
    return names


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _id(path: Path) -> str:
    return str(path.relative_to(OUTBOX))


@pytest.mark.parametrize("path", MODULES, ids=_id)
def test_the_driver_layer_and_the_claim_constructs_use_no_private_api(path):
    assert private_uses(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", OUTBOX_MODULES, ids=_id)
def test_no_module_of_outbox_uses_sqlalchemy_s_private_api(path):
    assert sqlalchemy_private_uses(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "connection._handle_dbapi_exception(exc, sql, params, cursor, context)\n",
        "from sqlalchemy.engine.base import _private\n",
        "from sqlalchemy.sql._typing import _ColumnExpressionArgument\n",
        "import sqlalchemy.sql._elements_constructors\n",
        "sql = text.replace('__[POSTCOMPILE_ids]', '%(ids)s')\n",
        "from sqlalchemy.sql.expression import ColumnElement\n"
        "class Turn(ColumnElement[bool]):\n    _traverse_internals = []\n",
        "import sqlalchemy as sa\n"
        "class Turn(sa.ColumnElement):\n    def _gen_cache_key(self):\n        pass\n",
    ],
)
def test_a_private_use_is_found(source):
    assert private_uses(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "from sqlalchemy.sql._typing import _ColumnExpressionArgument\n",
        "sql = text.replace('__[POSTCOMPILE_ids]', '%(ids)s')\n",
        "from sqlalchemy.sql.expression import ColumnElement\n"
        "class Turn(ColumnElement[bool]):\n    _traverse_internals = []\n",
    ],
)
def test_a_private_use_of_sqlalchemy_is_found(source):
    assert sqlalchemy_private_uses(source) != []


def test_the_module_s_own_private_names_are_its_own():
    assert private_uses("self._driver.execute(sql)\ncls._built = {}\nx.__class__\n") == []
    assert private_uses("class Built:\n    _cache = {}\n") == []


def test_another_library_s_private_names_are_not_sqlalchemy_s():
    source = "import logging\nfrom typer._click import Option\nparts._replace(path='/')\n"
    assert sqlalchemy_private_uses(source) == []
