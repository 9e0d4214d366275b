"""The repository stands on its own: no tracked file names a path outside it.

A fresh clone has only the repository; a file that reads or points at a sibling folder or an
absolute path of one machine works there and nowhere else.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Absolute paths of one machine's home or work folders.
MACHINE_PATH = re.compile(r"(?<![\w.:/-])/(?:work|home|Users|root)/[\w.-]+")
#: A relative path that climbs out of its folder (`../x`), checked against where it lands.
CLIMBING_PATH = re.compile(r"(?<![\w.])(?:\.\./)+[\w.-]+")


def tracked_text_files() -> list[Path]:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    files = [ROOT / name for name in listing.decode().split("\0") if name]
    return [path for path in files if path.is_file() and b"\0" not in path.read_bytes()[:8192]]


def paths_outside(path: Path, root: Path = ROOT) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    found = [match.group() for match in MACHINE_PATH.finditer(text)]
    for match in CLIMBING_PATH.finditer(text):
        lands = (path.parent / match.group()).resolve()
        if not lands.is_relative_to(root):
            found.append(match.group())
    return found


def test_no_tracked_file_names_a_path_outside_the_repository():
    offenders = {
        str(path.relative_to(ROOT)): outside
        for path in tracked_text_files()
        if (outside := paths_outside(path))
    }
    assert offenders == {}


def test_sibling_folders_and_machine_paths_are_outside(tmp_path):
    sibling, machine = ".." + "/shared/corpus", "/" + "work/main/README.md"
    note = tmp_path / "note.md"
    note.write_text(f"see {sibling} and {machine}")
    found = paths_outside(note)
    assert len(found) == 2 and machine.startswith(found[0]) and sibling.startswith(found[1])


def test_a_relative_path_that_stays_inside_is_allowed(tmp_path):
    (tmp_path / "docs").mkdir()
    note = tmp_path / "docs" / "note.md"
    note.write_text("see ../README.md")
    assert paths_outside(note, root=tmp_path) == []
