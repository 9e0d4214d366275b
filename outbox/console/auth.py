"""Who may use the console: the operator's token, and the signed session cookie it buys.

Everything is keyed by CONSOLE_TOKEN. The token itself is only compared (in constant time,
as digests, so not even its length shows); the cookie carries no secret, only when it was
issued and a random nonce, signed with HMAC-SHA256 under a key derived from the token.
Changing the token therefore signs every operator out. The CSRF token of a session is an
HMAC of its nonce under a second derived key (outbox/console/csrf.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

#: The session cookie's name.
SESSION_COOKIE = "outbox_console"
#: Seconds a session lasts after sign-in.
SESSION_SECONDS = 12 * 3600
#: Tokens shorter than this are refused at start: a console's token is guessed offline by
#: nobody, but online guessing is only bounded by its length.
MIN_TOKEN_LENGTH = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Session:
    """A signed-in operator: when they signed in, and the nonce their CSRF token is bound to."""

    issued_at: int
    nonce: str


class ConsoleKeys:
    """The keys derived from one console token, and the checks made with them."""

    def __init__(self, token: str) -> None:
        secret = token.encode()
        self._token_digest = hashlib.sha256(secret).digest()
        self.session_key = hmac.new(secret, b"outbox-console session v1", hashlib.sha256).digest()
        self.csrf_key = hmac.new(secret, b"outbox-console csrf v1", hashlib.sha256).digest()

    def token_matches(self, given: str) -> bool:
        """Whether `given` is the token; constant time in both its content and its length."""
        digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self._token_digest)

    def new_session(self, now: float | None = None) -> str:
        """The cookie value of a new session: `issued.nonce.signature`."""
        issued = int(time.time() if now is None else now)
        nonce = secrets.token_urlsafe(18)
        return f"{issued}.{nonce}.{self._sign(issued, nonce)}"

    def session_of(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value proves, or None: unsigned, tampered, or expired."""
        if not cookie or cookie.count(".") != 2:
            return None
        issued_text, nonce, signature = cookie.split(".")
        if not issued_text.isascii() or not issued_text.isdigit() or len(issued_text) > 12:
            return None
        issued = int(issued_text)
        if not hmac.compare_digest(signature.encode(), self._sign(issued, nonce).encode()):
            return None
        age = (time.time() if now is None else now) - issued
        if not 0 <= age <= SESSION_SECONDS:
            return None
        return Session(issued, nonce)

    def _sign(self, issued: int, nonce: str) -> str:
        message = f"session|{issued}|{nonce}".encode("utf-8", "surrogatepass")
        return _b64(hmac.new(self.session_key, message, hashlib.sha256).digest())


def cookie_attributes(max_age: int) -> dict[str, object]:
    """The session cookie's flags, for Starlette's set_cookie.

    Secure always: browsers treat http://localhost and http://127.0.0.1 as secure contexts
    and keep a Secure cookie there (Chromium does: tests/console/browser), and anywhere
    else the console must be reached over https, where a cookie without it could leak.
    """
    return {
        "max_age": max_age,
        "path": "/",
        "secure": True,
        "httponly": True,
        "samesite": "strict",
    }
