"""Webhook bodies read back into their JSON documents."""

from __future__ import annotations

import pytest

from outbox.payload import UnreadablePayload, decode_body


def test_a_body_the_fast_reader_refuses_is_still_read_as_the_standard_library_reads_it():
    raw = b'{"name": "\\ud800", "big": 123456789012345678901234567890, "x": NaN}'
    document = decode_body(raw)
    assert document["name"] == "\ud800" and document["big"] == 123456789012345678901234567890
    assert decode_body(b'{"id": "evt_1", "n": 1.5}') == {"id": "evt_1", "n": 1.5}


@pytest.mark.parametrize("raw", [b"{bad", b"[1]", b"\xff"])
def test_a_body_that_is_no_json_object_is_unreadable(raw):
    with pytest.raises(UnreadablePayload):
        decode_body(raw)
