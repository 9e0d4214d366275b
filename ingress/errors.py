"""Why the ingress refuses a request: each reason is a value with its one status code."""

from __future__ import annotations


class Rejection(Exception):
    """A request the ingress will not store: `status` is the HTTP answer, `reason` says why."""

    status: int = 400
    outcome: str = "bad_request"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HeaderMissing(Rejection):
    status = 400


class SignatureMalformed(Rejection):
    status = 400


class SignatureMissing(Rejection):
    status = 401
    outcome = "unauthorized"


class SignatureInvalid(Rejection):
    status = 401
    outcome = "unauthorized"


class TimestampOutsideTolerance(Rejection):
    status = 401
    outcome = "unauthorized"


class BodyTooLarge(Rejection):
    status = 413
    outcome = "too_large"


class IdNotStorable(Rejection):
    """An id the database cannot hold exactly: cut, cleaned or replaced, it could be taken
    for another delivery's, and a distinct event answered as its duplicate."""

    status = 400


class ServerBusy(Rejection):
    """The process holds as many large bodies still arriving as it may: try again later."""

    status = 503
    outcome = "busy"


class NotConfigured(Rejection):
    """No secret is configured for this source: nothing can be verified, so nothing is taken."""

    status = 503
    outcome = "not_configured"


class DatabaseUnavailable(Rejection):
    status = 503
    outcome = "unavailable"


class NotCommittedInTime(Rejection):
    """The webhook's commit did not return within the webhook deadline (ingress/deadline.py)."""

    status = 503
    outcome = "timed_out"
