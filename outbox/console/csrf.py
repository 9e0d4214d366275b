"""CSRF tokens: every POST carries one, compared in constant time.

A signed-in operator's token is bound to their session (an HMAC of the session's nonce
under a key derived from CONSOLE_TOKEN), so a page of another site can neither read nor
forge it. The sign-in form has no session yet: it uses a double-submit pair, a random value
in a cookie of its own and the same value in the form. SameSite=Strict on both cookies is
a second wall, not the only one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from outbox.console.auth import ConsoleKeys, Session

#: The form field every POST carries.
CSRF_FIELD = "csrf"
#: The cookie of the sign-in form's double-submit pair.
LOGIN_CSRF_COOKIE = "outbox_console_login"


def session_token(keys: ConsoleKeys, session: Session) -> str:
    """The CSRF token of one session."""
    digest = hmac.new(keys.csrf_key, f"csrf|{session.nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def session_token_matches(keys: ConsoleKeys, session: Session, given: str | None) -> bool:
    """Whether a form's token is this session's."""
    return given is not None and hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), session_token(keys, session).encode()
    )


def new_login_token() -> str:
    """A fresh value for the sign-in form's double-submit pair."""
    return secrets.token_urlsafe(24)


def login_token_matches(cookie: str | None, given: str | None) -> bool:
    """Whether the sign-in form's field repeats its cookie."""
    if not cookie or not given:
        return False
    return hmac.compare_digest(
        cookie.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass")
    )
