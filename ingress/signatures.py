"""HMAC signature checks for GitHub and Stripe, against several secrets at once (rotation).

Written here rather than taken from the SDKs: githubkit's verify() also accepts legacy
sha1 signatures, and stripe's verify_header() cannot tell a malformed header (400) from
a wrong signature (401) and does not refuse timestamps from the future.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Sequence

from ingress.errors import (
    SignatureInvalid,
    SignatureMalformed,
    SignatureMissing,
    TimestampOutsideTolerance,
)

_GITHUB_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
#: Stripe's timestamp: ASCII digits only (str.isdigit() takes "²", which int() refuses),
#: and few enough that the difference from now is a number of seconds, not an overflow.
_STRIPE_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_STRIPE_V1 = re.compile(r"[0-9a-fA-F]{64}")


def github_signature(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 header GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_github(body: bytes, header: str | None, secrets: Sequence[str]) -> int:
    """Index of the secret that signed `body`; raises when none did."""
    if header is None:
        raise SignatureMissing("X-Hub-Signature-256 is missing (sha1 signatures are not accepted)")
    match = _GITHUB_SIGNATURE.fullmatch(header.strip())
    if match is None:
        raise SignatureMalformed("X-Hub-Signature-256 is not 'sha256=' and 64 hex digits")
    given = bytes.fromhex(match.group(1))
    for index, secret in enumerate(secrets):
        if hmac.compare_digest(_sha256_hmac(secret, body), given):
            return index
    raise SignatureInvalid("signature does not match the body")


def _sha256_hmac(secret: str, message: bytes) -> bytes:
    """HMAC-SHA256 of `message` under `secret`, as raw bytes.

    hmac.digest is OpenSSL's one-shot HMAC: no HMAC object and no hex string for each
    request, which hmac.new(...).hexdigest() cost on every webhook. Compared as bytes
    with the header's hex decoded, the check is the same, case-insensitive as before.
    """
    return hmac.digest(secret.encode(), message, "sha256")


def stripe_signature(secret: str, body: bytes, timestamp: int) -> str:
    """The Stripe-Signature header Stripe sends for `body` at `timestamp`."""
    signed = f"{timestamp}.".encode() + body
    return f"t={timestamp},v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def parse_stripe_header(header: str) -> tuple[int, list[bytes]]:
    """The timestamp and the v1 signatures (raw bytes) of a Stripe-Signature header."""
    timestamp: int | None = None
    signatures: list[bytes] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not value:
            raise SignatureMalformed("Stripe-Signature has an element without a value")
        if key == "t":
            if _STRIPE_TIMESTAMP.fullmatch(value) is None:
                raise SignatureMalformed(
                    "Stripe-Signature timestamp is not a number in ASCII digits"
                )
            timestamp = int(value)
        elif key == "v1":
            if _STRIPE_V1.fullmatch(value) is None:
                raise SignatureMalformed("Stripe-Signature v1 is not 64 hex digits")
            signatures.append(bytes.fromhex(value))
    if timestamp is None or not signatures:
        raise SignatureMalformed("Stripe-Signature needs a timestamp 't' and a 'v1' signature")
    return timestamp, signatures


def verify_stripe(
    body: bytes, header: str | None, secrets: Sequence[str], *, tolerance: int, now: float
) -> int:
    """Index of the secret that signed `body`; raises when none did or the timestamp is stale."""
    if header is None:
        raise SignatureMissing("Stripe-Signature is missing")
    timestamp, given = parse_stripe_header(header)
    signed = f"{timestamp}.".encode() + body
    for index, secret in enumerate(secrets):
        expected = _sha256_hmac(secret, signed)
        if any(hmac.compare_digest(expected, candidate) for candidate in given):
            if abs(now - timestamp) > tolerance:
                raise TimestampOutsideTolerance(_how_far(now - timestamp, tolerance))
            return index
    raise SignatureInvalid("no v1 signature matches the body")


def _how_far(age: float, tolerance: int) -> str:
    """A timestamp past the tolerance, in whole seconds rounded away from it: one 300.4 s
    old is "301 s old" against a tolerance of 300 s, never "300 s" nor "-300 s"."""
    seconds = math.ceil(abs(age))
    when = f"{seconds} s old" if age > 0 else f"{seconds} s in the future"
    return f"signature timestamp is {when} (tolerance {tolerance} s)"
