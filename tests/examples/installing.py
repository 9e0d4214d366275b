"""Installing an example package of examples/ for a test, as pip would install it."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

from tests.packages import declare_distribution

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def install_example(name: str, site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pip install examples/<name>`, as importlib sees it: the package's `src` on sys.path
    and a dist-info declaring the entry points its own pyproject.toml declares."""
    project = tomllib.loads((EXAMPLES / name / "pyproject.toml").read_text())["project"]
    declare_distribution(site, project["name"], project["version"], project["entry-points"])
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(EXAMPLES / name / "src"))
    importlib.invalidate_caches()
