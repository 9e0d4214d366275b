"""The layers of docs/architecture.md hold, read from the source of each package.

`domain/` may import of `outbox/` the session (outbox/session.py: the base and column
types of its tables, named statements and a batch's writes), the settings and the handler
contract, and two value helpers that reach no database; nothing of the driver layer under
the session, which only `outbox/` imports. The domain never reaches up into `ingress/`,
`processors/` or the CLI; and no module of the application imports another that imports
it back, so each one can be read knowing only those it imports.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = ROOT / "domain"
#: The application's packages (bench/ and tests/ may import anything).
APPLICATION = ("outbox", "ingress", "processors", "domain")


def public_names(path: Path) -> frozenset[str]:
    """The names a module lists in its `__all__`."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return frozenset(ast.literal_eval(node.value))
    raise AssertionError(f"{path} has no __all__")


#: What the domain may import of `outbox/`: a module -> the names it may take from it
#: (None: any public name).
OUTBOX_ALLOWED: dict[str, frozenset[str] | None] = {
    # The session as the domain works with it: what it lists, nothing else.
    "outbox.session": public_names(ROOT / "outbox" / "session.py"),
    "outbox.settings": None,
    # The handler contract: what a handler is given and may say back, with the helpers it
    # gives (typed values out of untrusted JSON, the retry policy the settings give).
    "outbox.handling": None,
}
#: The driver layer, which only modules of `outbox/` import.
DRIVER = "outbox.driver"
#: Packages above the domain, never imported by it.
ABOVE = ("ingress", "processors", "outbox.cli")


@dataclass(frozen=True)
class Import:
    """One module imported by a module of the application, and the names taken from it."""

    module: str
    names: tuple[str, ...]
    line: int
    #: Run when the importing module is imported (not inside a function, nor only for
    #: type checkers under `if TYPE_CHECKING:`).
    at_import: bool
    #: Every name taken is a module of the package (`from domain import ledger`): what is
    #: imported is those modules, each recorded as an Import of its own.
    modules_only: bool = False


def imports_of(path: Path, package: str, root: Path) -> list[Import]:
    """Every import in the module at `path`, of `package`, whose top package is a folder of
    `root`; `from domain import x` is resolved to `domain.x` when x is a module there."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    _collect(tree.body, root, package, at_import=True, found=found)
    return found


def _collect(
    body: list[ast.stmt], root: Path, package: str, *, at_import: bool, found: list[Import]
) -> None:
    for node in body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name, (), node.lineno, at_import))
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            names = tuple(alias.name for alias in node.names)
            folder = root / module.replace(".", "/")
            # `from domain import ledger` imports the module domain.ledger
            submodules = [
                name
                for name in names
                if (folder / f"{name}.py").exists() or (folder / name / "__init__.py").exists()
            ]
            only = len(submodules) == len(names)
            found.append(Import(module, names, node.lineno, at_import, modules_only=only))
            found += [Import(f"{module}.{n}", (), node.lineno, at_import) for n in submodules]
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            _collect(node.body, root, package, at_import=False, found=found)
            _collect(node.orelse, root, package, at_import=at_import, found=found)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            _collect(_statements(node), root, package, at_import=False, found=found)
        else:
            _collect(_statements(node), root, package, at_import=at_import, found=found)


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


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)]  # `from . import x` is the package itself
    return ".".join([*base, node.module] if node.module else base)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def modules_of(root: Path, package: str) -> dict[str, list[Import]]:
    """Each module of `package` (a folder of `root`) and of the packages in it, by its
    dotted name, with its imports."""
    modules = {}
    for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = imports_of(path, ".".join(parts[:-1]), root)
    return modules


def domain_modules(root: Path = DOMAIN) -> dict[str, list[Import]]:
    """Each module of the domain package by its dotted name, with its imports."""
    return modules_of(root.parent, "domain")


def application_modules(root: Path = ROOT) -> dict[str, list[Import]]:
    """Each module of the application's packages by its dotted name, with its imports."""
    return {name: found for top in APPLICATION for name, found in modules_of(root, top).items()}


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
            if not found.names and allowed is not None:  # `import outbox.session`: all of it
                refused.append(f"{name}:{found.line}: import {found.module}")
            refused += [
                f"{name}:{found.line}: {found.module}.{n}"
                for n in found.names
                if n.startswith("_") or (allowed is not None and n not in allowed)
            ]
    return refused


def driver_importers(modules: dict[str, list[Import]]) -> list[str]:
    """Each import of the driver layer by a module outside `outbox/`, as `module:line`."""
    return [
        f"{name}:{found.line}: {found.module}"
        for name, imports in modules.items()
        if not name.startswith("outbox.") and name != "outbox"
        for found in imports
        if found.module == DRIVER
        or found.module.startswith(f"{DRIVER}.")
        or (found.module == "outbox" and "driver" in found.names)
    ]


def reached_from(modules: dict[str, list[Import]], start: str) -> set[str]:
    """The modules of `modules` that importing `start` may import, itself included (an
    import inside a function counts: it runs when the function does)."""
    reached: set[str] = set()
    waiting = [start]
    while waiting:
        name = waiting.pop()
        if name in reached or name not in modules:
            continue
        reached.add(name)
        waiting += [found.module for found in modules[name]]
    return reached


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
    """One cycle of `modules` importing one another when imported, or None. `from
    outbox.cli import events` imports the module outbox.cli.events, not outbox.cli's own
    names, so it is no edge to the package (which imports its modules)."""
    graph = {
        name: sorted(
            {
                i.module
                for i in imports
                if i.at_import and i.module in modules and not i.modules_only
            }
        )
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


def test_the_settings_and_the_contract_reach_no_database():
    modules = application_modules()
    # The contract's helpers: typed values out of untrusted JSON, the retry policy.
    helpers = {"outbox.fields", "outbox.retry"}
    for allowed in ("outbox.settings", "outbox.handling"):
        reached = reached_from(modules, allowed)
        assert reached <= {allowed, "outbox.settings", "outbox.reader_settings", *helpers}
    for helper in helpers:
        assert reached_from(modules, helper) <= {
            helper,
            "outbox.settings",
            "outbox.reader_settings",
        }


def test_only_outbox_imports_the_driver_layer():
    assert driver_importers(application_modules()) == []


def test_the_application_s_modules_import_one_another_without_a_cycle():
    assert import_cycle(application_modules()) is None


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
        "from outbox.db import Base\n",
        "from outbox.driver.prepared import SessionDriver\n",
        "def write(session):\n    from outbox.driver.batch_writes import update_all\n",
        "from outbox.session import Query, update_all\n",
        "from outbox.session import _private\n",
        "from outbox.settings import _cache\n",
        "import outbox.session\n",
        "from outbox.store import claim\n",
        "from outbox import driver\n",
        "from outbox.driver import libpq\n",
        "from outbox.models import WebhookEvent\n",
        "from outbox.fields import as_int64\n",
        "from outbox.retry import RetryPolicy\n",
    ],
)
def test_a_domain_module_importing_the_driver_layer_is_refused(tmp_path, source):
    assert outbox_refusals(_package(tmp_path, {"rules": source})) != []


def test_the_session_settings_and_contract_are_allowed(tmp_path):
    source = (
        "from outbox.session import Base, BigId, Query, UTCDateTime, insert_all\n"
        "from outbox.handling import EventContext\n"
        "from outbox.settings import Settings\n"
    )
    assert outbox_refusals(_package(tmp_path, {"rules": source})) == []


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("ingress/app.py", "from outbox.driver.libpq import PreparedStatement\n"),
        ("processors/apply.py", "def f():\n    from outbox.driver import statements\n"),
        ("domain/ledger.py", "from outbox import driver\n"),
    ],
)
def test_a_module_outside_outbox_importing_the_driver_layer_is_found(tmp_path, path, source):
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text(source)
    (tmp_path / "outbox" / "driver").mkdir(parents=True)
    (tmp_path / "outbox" / "driver" / "statements.py").write_text("")
    modules = modules_of(tmp_path, path.partition("/")[0])
    assert driver_importers(modules) != []


def test_the_driver_layer_importing_itself_is_allowed(tmp_path):
    (tmp_path / "outbox" / "driver").mkdir(parents=True)
    (tmp_path / "outbox" / "driver" / "__init__.py").write_text("")
    (tmp_path / "outbox" / "driver" / "batch_writes.py").write_text(
        "from outbox.driver.prepared import SessionDriver\n"
    )
    (tmp_path / "outbox" / "finishing.py").write_text("from outbox.driver import statements\n")
    assert driver_importers(modules_of(tmp_path, "outbox")) == []


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


def test_a_package_taking_its_own_modules_is_no_cycle_but_a_module_importing_back_is(tmp_path):
    (tmp_path / "outbox" / "cli").mkdir(parents=True)
    (tmp_path / "outbox" / "cli" / "__init__.py").write_text("from outbox.cli import events\n")
    (tmp_path / "outbox" / "cli" / "events.py").write_text("from outbox.cli import common\n")
    (tmp_path / "outbox" / "cli" / "common.py").write_text("import gc\n")
    assert import_cycle(modules_of(tmp_path, "outbox")) is None
    (tmp_path / "outbox" / "cli" / "common.py").write_text("from outbox.cli.events import x\n")
    assert import_cycle(modules_of(tmp_path, "outbox")) == [
        "outbox.cli.events",
        "outbox.cli.common",
        "outbox.cli.events",
    ]
