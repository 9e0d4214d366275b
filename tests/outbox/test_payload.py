"""Reading bodies: decode_body for the processors, peek_body for the ingress's few fields."""

from __future__ import annotations

import json
import sys

import pytest

from ingress.github import github_event
from outbox.payload import UnreadablePayload, decode_body, peek_body
from outbox.stripe_events import incoming_stripe_event
from tests.conftest import CORPUS

GITHUB_EXAMPLES = sorted((CORPUS / "github").glob("*/*.json"))
STRIPE_EXAMPLES = sorted((CORPUS / "stripe" / "objects").glob("**/*.json"))


@pytest.mark.parametrize("path", GITHUB_EXAMPLES + STRIPE_EXAMPLES, ids=lambda p: p.name)
def test_the_quick_reader_reads_every_example_as_json_does(path):
    raw = path.read_bytes()
    assert peek_body(raw) == decode_body(raw) == json.loads(raw)


def test_every_github_example_makes_the_same_row_either_way(monkeypatch):
    for path in GITHUB_EXAMPLES:
        raw = path.read_bytes()
        quick = github_event(raw, {}, "d-1", path.parent.name, "github#0")
        monkeypatch.setattr("ingress.github.peek_body", decode_body)
        exact = github_event(raw, {}, "d-1", path.parent.name, "github#0")
        monkeypatch.undo()
        assert quick == exact


def test_an_integer_past_64_bits_reads_as_no_id_either_way():
    raw = b'{"id":"evt_1","type":"checkout.session.completed","created":123456789012345678901234,'
    raw += b'"data":{"object":{"id":"cs_1","client_reference_id":99999999999999999999999}}}'
    quick = incoming_stripe_event(raw, {}, "stripe#0", "any")
    assert quick.account_id is None and quick.provider_created_at is None
    assert decode_body(raw)["data"]["object"]["client_reference_id"] == 99999999999999999999999


@pytest.mark.parametrize(
    "raw",
    [b'{"a": NaN}', b'{"a": "\\ud800"}', '{"a": 1}'.encode("utf-16")],
    ids=["nan", "lone-surrogate", "utf-16"],
)
def test_what_only_json_accepts_is_still_read(raw):
    assert peek_body(raw).keys() == decode_body(raw).keys() == {"a"}


@pytest.mark.parametrize("reader", [decode_body, peek_body])
def test_json_nested_past_the_recursion_limit_is_unreadable_not_an_error(reader):
    deep = b"[" * (sys.getrecursionlimit() * 2)
    with pytest.raises(UnreadablePayload, match="nested too deeply"):
        reader(b'{"a":' + deep + b"]" * (sys.getrecursionlimit() * 2) + b"}")


def test_a_body_the_fast_reader_refuses_is_still_read_as_the_standard_library_reads_it():
    raw = b'{"name": "\\ud800", "big": 123456789012345678901234567890, "x": NaN}'
    for reader in (decode_body, peek_body):
        document = reader(raw)
        assert document["name"] == "\ud800" and document["big"] == 123456789012345678901234567890
    assert decode_body(b'{"id": "evt_1", "n": 1.5}') == {"id": "evt_1", "n": 1.5}


@pytest.mark.parametrize("raw", [b"{bad", b"[1]", b"\xff"])
def test_a_body_that_is_no_json_object_is_unreadable(raw):
    for reader in (decode_body, peek_body):
        with pytest.raises(UnreadablePayload):
            reader(raw)
