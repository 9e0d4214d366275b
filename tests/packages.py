"""Installed distributions for tests, as importlib.metadata finds them: a `*.dist-info`
folder declaring entry points, on a folder of sys.path. The handler registry discovers
packages this way (outbox/dispatch.py), whoever installed them."""

from __future__ import annotations

import textwrap
from pathlib import Path

from outbox.dispatch import ENTRY_POINT_GROUP


def declare_distribution(
    site: Path, name: str, version: str, entry_points: dict[str, dict[str, str]]
) -> None:
    """A dist-info for `name` in `site`, with `entry_points` ({group: {name: object}})."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    sections = [
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in entries.items())
        for group, entries in entry_points.items()
    ]
    (info / "entry_points.txt").write_text("\n".join(sections))


def install_package(site: Path, name: str, handlers: dict[str, str], code: str) -> None:
    """A one-module package `name` in `site` (put `site` on sys.path) whose `handlers` are
    entry points of the handler group."""
    (site / f"{name}.py").write_text(textwrap.dedent(code))
    declare_distribution(site, name, "1.0", {ENTRY_POINT_GROUP: handlers})
