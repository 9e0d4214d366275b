"""Fixtures of the example packages' tests: each example installed as pip would install it
(its source on sys.path, its entry points declared), and the PR jobs' `world`."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.domain.jobs_world")

from tests.domain.jobs_world import world  # noqa: E402, F401
from tests.examples.installing import install_example  # noqa: E402


@pytest.fixture
def pr_command_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_example("pr-command", tmp_path / "site", monkeypatch)
