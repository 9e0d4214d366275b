"""Installing an example package of examples/ for a test, as pip would install it."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def install_example(name: str, site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pip install examples/<name>`, as importlib sees it: the package's `src` on sys.path
    and a dist-info declaring the entry points its own pyproject.toml declares."""
    project = tomllib.loads((EXAMPLES / name / "pyproject.toml").read_text())["project"]
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    sections = [
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in entries.items())
        for group, entries in project["entry-points"].items()
    ]
    (info / "entry_points.txt").write_text("\n".join(sections))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(EXAMPLES / name / "src"))
    importlib.invalidate_caches()
