"""The layers of docs/architecture.md hold: the domain's imports, read from its source.

`domain/` may import of `outbox/` the session, the settings and the handler contract, and
nothing of the driver layer under them; it never reaches up into `ingress/`,
`processors/` or the CLI; and its modules import one another without a cycle, so each one
can be read knowing only those it imports.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = ROOT / "domain"

#: What the domain may import of `outbox/`: a module -> the names it may take from it
#: (None: any name).
OUTBOX_ALLOWED: dict[str, frozenset[str] | None] = {
    "outbox.db": frozenset({"Base", "UTCDateTime", "make_sessionmaker", "transaction", "utcnow"}),
    "outbox.models": frozenset({"BigId"}),
    "outbox.driver.statements": None,
    "outbox.driver.batch_writes": None,
    "outbox.settings": None,
    "outbox.handling": None,
    "outbox.registry": None,
    "outbox.fields": None,
    "outbox.retry": None,
}
#: Packages above the domain, never imported by it.
ABOVE = ("ingress", "processors", "outbox.cli")


@dataclass(frozen=True)
class Import:
    """One module imported by a domain module, and the names taken from it."""

    module: str
    names: tuple[str, ...]
    line: int
    #: Run when the importing module is imported (not inside a function, nor only for
    #: type checkers under `if TYPE_CHECKING:`).
    at_import: bool


def imports_of(path: Path, package: str = "domain") -> list[Import]:
    """Every import in the module at `path`, with `from domain import x` resolved to
    `domain.x` when x is a module of the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    _collect(tree.body, path, package, at_import=True, found=found)
    return found


def _collect(
    body: list[ast.stmt], path: Path, package: str, *, at_import: bool, found: list[Import]
) -> None:
    for node in body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name, (), node.lineno, at_import))
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, path, package)
            names = tuple(alias.name for alias in node.names)
            found.append(Import(module, names, node.lineno, at_import))
            for name in names:  # `from domain import ledger` imports the module domain.ledger
                if (path.parent.parent / module.replace(".", "/") / f"{name}.py").exists():
                    found.append(Import(f"{module}.{name}", (), node.lineno, at_import))
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            _collect(node.body, path, package, at_import=False, found=found)
            _collect(node.orelse, path, package, at_import=at_import, found=found)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            _collect(_statements(node), path, package, at_import=False, found=found)
        else:
            _collect(_statements(node), path, package, at_import=at_import, found=found)


def _statements(node: ast.AST) -> list[ast.stmt]:
    """The statements directly inside `node` (a class's body, an if's branches, a try's
    handlers), for the walk to go on into."""
    inner: list[ast.stmt] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.stmt):
            inner.append(child)
        elif isinstance(child, ast.excepthandler | ast.match_case):
            inner.extend(child.body)
    return inner


def _absolute(node: ast.ImportFrom, path: Path, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)]  # `from . import x` is the package itself
    return ".".join([*base, node.module] if node.module else base)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def domain_modules(root: Path = DOMAIN) -> dict[str, list[Import]]:
    """Each module of the domain package by its dotted name, with its imports."""
    return {f"domain.{path.stem}": imports_of(path) for path in sorted(root.glob("*.py"))}


def outbox_refusals(modules: dict[str, list[Import]]) -> list[str]:
    """Each import of `outbox/` the domain may not make, as `module:line: what`."""
    refused = []
    for name, imports in modules.items():
        for found in imports:
            if found.module != "outbox" and not found.module.startswith("outbox."):
                continue
            if found.module == "outbox":  # `from outbox import store` names a module
                wanted = [f"outbox.{n}" for n in found.names]
                refused += [f"{name}:{found.line}: {w}" for w in wanted if w not in OUTBOX_ALLOWED]
                continue
            if found.module not in OUTBOX_ALLOWED:
                refused.append(f"{name}:{found.line}: {found.module}")
                continue
            allowed = OUTBOX_ALLOWED[found.module]
            if allowed is None:
                continue
            if not found.names:  # `import outbox.db`: every name of it within reach
                refused.append(f"{name}:{found.line}: import {found.module}")
            refused += [
                f"{name}:{found.line}: {found.module}.{n}" for n in found.names if n not in allowed
            ]
    return refused


def reaches_above(modules: dict[str, list[Import]]) -> list[str]:
    """Each import of a package above the domain, as `module:line: what`."""
    return [
        f"{name}:{found.line}: {found.module}"
        for name, imports in modules.items()
        for found in imports
        if any(found.module == top or found.module.startswith(f"{top}.") for top in ABOVE)
        or (found.module == "outbox" and "cli" in found.names)
    ]


def import_cycle(modules: dict[str, list[Import]]) -> list[str] | None:
    """One cycle of domain modules importing one another when imported, or None."""
    graph = {
        name: sorted({i.module for i in imports if i.at_import and i.module in modules})
        for name, imports in modules.items()
    }
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        path.append(name)
        for following in graph[name]:
            cycle = visit(following)
            if cycle is not None:
                return cycle
        path.pop()
        done.add(name)
        return None

    for name in graph:
        cycle = visit(name)
        if cycle is not None:
            return cycle
    return None


def test_the_domain_imports_of_outbox_only_the_session_settings_and_handler_contract():
    assert outbox_refusals(domain_modules()) == []


def test_the_domain_never_imports_the_ingress_the_processors_or_the_cli():
    assert reaches_above(domain_modules()) == []


def test_the_domain_modules_import_one_another_without_a_cycle():
    assert import_cycle(domain_modules()) is None


# --- the checks themselves, on modules written for them --------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, list[Import]]:
    package = tmp_path / "domain"
    package.mkdir()
    for name, text in files.items():
        (package / f"{name}.py").write_text(text)
    return domain_modules(package)


@pytest.mark.parametrize(
    "source",
    [
        "from outbox.db import Base, insert_rows\n",
        "from outbox.prepared import SessionDriver\n",
        "def write(session):\n    from outbox.db import write_over\n",
        "import outbox.db\n",
        "from outbox.store import claim\n",
        "from outbox import driver\n",
        "from outbox.models import WebhookEvent\n",
    ],
)
def test_a_domain_module_importing_the_driver_layer_is_refused(tmp_path, source):
    assert outbox_refusals(_package(tmp_path, {"rules": source})) != []


def test_the_session_settings_and_contract_are_allowed(tmp_path):
    source = (
        "from outbox.db import Base, UTCDateTime, transaction, utcnow\n"
        "from outbox.models import BigId\n"
        "from outbox.handling import EventContext\n"
        "from outbox.settings import Settings\n"
    )
    assert outbox_refusals(_package(tmp_path, {"rules": source})) == []


@pytest.mark.parametrize(
    "source",
    [
        "from processors.apply import process_pass\n",
        "import ingress.app\n",
        "def command():\n    from outbox.cli import main\n",
        "from outbox import cli\n",
    ],
)
def test_a_domain_module_reaching_above_the_domain_is_refused(tmp_path, source):
    assert reaches_above(_package(tmp_path, {"rules": source})) != []


def test_a_cycle_through_from_domain_import_is_found(tmp_path):
    modules = _package(
        tmp_path,
        {
            "accounts": "from domain import ledger\n",
            "ledger": "from domain.balances import balance\n",
            "balances": "class Standing:\n    from domain.accounts import Account\n",
        },
    )
    assert import_cycle(modules) == [
        "domain.accounts",
        "domain.ledger",
        "domain.balances",
        "domain.accounts",
    ]


def test_imports_inside_functions_or_for_type_checkers_make_no_cycle(tmp_path):
    modules = _package(
        tmp_path,
        {
            "accounts": "def total(session):\n    from domain import ledger\n",
            "ledger": (
                "from typing import TYPE_CHECKING\n"
                "from domain.accounts import total\n"
                "if TYPE_CHECKING:\n    from domain.accounts import total as _\n"
            ),
        },
    )
    assert import_cycle(modules) is None
