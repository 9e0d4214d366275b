"""Turning stored raw bytes back into the JSON document they carry."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import orjson

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def _loads(text: str | bytes) -> Any:
    # orjson reads a webhook body in a third of the stdlib's time (each processed event
    # decodes its body once). It refuses a little that the stdlib reads (lone surrogate
    # escapes, integers past 64 bits, NaN): those bodies are read as before.
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


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
        document = _loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UnreadablePayload(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise UnreadablePayload(f"body is JSON but not an object ({type(document).__name__})")
    return document
