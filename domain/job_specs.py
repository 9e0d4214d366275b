"""Job specs: what a pull-request job asks for, read from JSON and checked field by field
(`outbox jobs submit FILE`, the PR command example, onboarding).

Numbers with a fraction are read exactly (never floats); the first wrong field is named in
InvalidJobSpec's message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from domain.credits import InvalidAmount, parse_credits
from domain.pull_requests import FileChange

MAX_FILES = 300  #: files in one change set; GitHub's tree API takes more, reviewers do not
MAX_TITLE = 256  #: characters; GitHub's limit for a pull request title
MAX_PATH = 1024  #: characters of one file path


class InvalidJobSpec(ValueError):
    """A job spec that cannot be a job; the message names the field."""


@dataclass(frozen=True)
class JobSpec:
    """What a job asks for, as `outbox jobs submit FILE` reads it from JSON."""

    account: str  #: the account's numeric id or login
    installation: int
    repository: str
    base_branch: str
    title: str
    body: str
    files: tuple[FileChange, ...]
    required_credits: Decimal
    key: str | None = None


def load_spec(text: str | bytes) -> JobSpec:
    """A JobSpec from JSON text; numbers with a fraction are read exactly (never floats)."""
    try:
        document = json.loads(text, parse_float=Decimal)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidJobSpec(f"not valid JSON: {exc}") from exc
    return parse_spec(document)


def parse_spec(document: Any) -> JobSpec:
    """A JobSpec from parsed JSON; InvalidJobSpec names the first field that is wrong."""
    if not isinstance(document, dict):
        raise InvalidJobSpec("a job spec is a JSON object")
    known = {f for f in JobSpec.__dataclass_fields__}
    unknown = sorted(set(document) - known)
    if unknown:
        raise InvalidJobSpec(f"unknown field(s): {', '.join(unknown)}")
    account = document.get("account")
    if isinstance(account, bool) or not isinstance(account, int | str) or not str(account):
        raise InvalidJobSpec("account: the account's numeric id or login is required")
    installation = document.get("installation")
    if isinstance(installation, bool) or not isinstance(installation, int) or installation <= 0:
        raise InvalidJobSpec("installation: a positive installation id is required")
    repository = _text(document, "repository")
    owner, _, name = repository.partition("/")
    if not owner or not name or "/" in name or " " in repository:
        raise InvalidJobSpec("repository: expected 'owner/name'")
    title = _text(document, "title")
    if len(title) > MAX_TITLE:
        raise InvalidJobSpec(f"title: at most {MAX_TITLE} characters")
    body = document.get("body", "")
    if not isinstance(body, str):
        raise InvalidJobSpec("body: must be a string")
    key = document.get("key")
    if key is not None and (not isinstance(key, str) or not key or len(key) > 200):
        raise InvalidJobSpec("key: a non-empty string of at most 200 characters")
    raw_credits = document.get("required_credits")
    if raw_credits is None:
        raise InvalidJobSpec("required_credits: required (0 for free work)")
    try:
        credits = parse_credits(raw_credits)
    except (InvalidAmount, TypeError, ValueError) as exc:
        raise InvalidJobSpec(f"required_credits: {exc}") from exc
    if credits < 0:
        raise InvalidJobSpec("required_credits: must not be negative")
    return JobSpec(
        account=str(account),
        installation=installation,
        repository=repository,
        base_branch=_branch(document),
        title=title,
        body=body,
        files=_files(document.get("files")),
        required_credits=credits,
        key=key,
    )


def _text(document: dict[str, Any], field: str) -> str:
    value = document.get(field)
    if not isinstance(value, str) or not value.strip():
        raise InvalidJobSpec(f"{field}: a non-empty string is required")
    return value.strip()


def _branch(document: dict[str, Any]) -> str:
    if document.get("base_branch") is None:
        return ""  # the repository's default branch, read when the job runs
    branch = _text(document, "base_branch")
    if branch.startswith(("/", "refs/")) or ".." in branch or " " in branch:
        raise InvalidJobSpec("base_branch: a branch name such as 'main'")
    return branch


def _files(value: Any) -> tuple[FileChange, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidJobSpec("files: a non-empty list of {path, content} or {path, delete: true}")
    if len(value) > MAX_FILES:
        raise InvalidJobSpec(f"files: at most {MAX_FILES} files in one job")
    changes: list[FileChange] = []
    seen: set[str] = set()
    for n, item in enumerate(value):
        where = f"files[{n}]"
        if not isinstance(item, dict) or set(item) - {"path", "content", "delete"}:
            raise InvalidJobSpec(f"{where}: expected {{path, content}} or {{path, delete: true}}")
        path = item.get("path")
        if not isinstance(path, str) or not _safe_path(path):
            raise InvalidJobSpec(f"{where}.path: a relative path without '.', '..' or '//'")
        if path in seen:
            raise InvalidJobSpec(f"{where}.path: {path} appears twice")
        seen.add(path)
        deleting = item.get("delete", False)
        if deleting is True and "content" not in item:
            changes.append(FileChange(path, None))
        elif "content" in item and isinstance(item["content"], str) and not deleting:
            changes.append(FileChange(path, item["content"]))
        else:
            raise InvalidJobSpec(f"{where}: give either content (a string) or delete: true")
    return tuple(changes)


def _safe_path(path: str) -> bool:
    if not path or len(path) > MAX_PATH or path.startswith("/") or "\x00" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))
