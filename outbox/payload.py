"""Turning stored raw bytes back into the JSON document they carry."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


class UnreadablePayload(ValueError):
    """The body is not the JSON object its provider promises."""


def decode_body(raw: bytes, content_type: str | None = None) -> dict[str, Any]:
    """The JSON object in a webhook body: plain JSON, or GitHub's form encoding (`payload=`)."""
    if content_type and content_type.split(";")[0].strip().lower() == FORM_CONTENT_TYPE:
        try:
            fields = parse_qs(raw.decode("utf-8"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as exc:
            raise UnreadablePayload(f"form body is not valid: {exc}") from exc
        if len(fields.get("payload", [])) != 1:
            raise UnreadablePayload("form body has no single 'payload' field")
        text: str | bytes = fields["payload"][0]
    else:
        text = raw
    try:
        document = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UnreadablePayload(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise UnreadablePayload(f"body is JSON but not an object ({type(document).__name__})")
    return document
