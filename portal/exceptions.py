"""The portal's domain errors: what services and the access call raise, with no HTTP in them.

Each carries a stable ``code`` and a ``message`` safe to show to the person who asked. The edge
(``portal.errors``) maps each class to an HTTP status and a JSON, FHIR or HTML body; Socket.IO
handlers turn them into ``{code, message}`` refusals. This module imports nothing from the portal.
"""
from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

# What a refusal says when it must not tell whether the record exists.
NO_SUCH_RECORD = "There is no such record."


class PortalError(Exception):
    """A refusal the person can understand. ``audited`` is set once the refusal is already on record,
    so the edge does not record it a second time."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message
        self.audited = False


class InvalidInput(PortalError):
    """The request was malformed or incomplete: nothing was done."""


class Unauthenticated(PortalError):
    """The request carries no valid credentials: no live browser session (never signed in, timed out, ended),
    a sign-in or step-up the provider's tokens did not prove, or an app's token missing, malformed, expired
    or revoked. ``token_error`` is the RFC 6750 error code the challenge names under /fhir (None when no
    token was sent at all); other answers send no challenge."""

    def __init__(self, code: str, message: str, *, token_error: str | None = "invalid_token"):  # noqa: S107 - an error code
        super().__init__(code, message)
        self.token_error = token_error


class Forbidden(PortalError):
    """This person may not do this, whatever the record (e.g. a patient account not yet linked to a chart)."""


class NotFound(PortalError):
    """There is no such thing (or the asker may not learn that there is)."""


class Conflict(PortalError):
    """The request clashes with what is stored or with the state of the log."""


class LimitReached(PortalError):
    """The person has done this too often for now."""


class ProviderUnavailable(PortalError):
    """The sign-in provider could not be reached, or failed a check before anyone was signed in."""


class AccessDenied(PortalError):
    """The one access decision said no. ``conceal`` answers as "not found" so the asker learns nothing
    about whether the record exists; ``resource`` is what was asked for (a chart, a conversation)."""

    def __init__(self, action: str, reason: str, *, conceal: bool = False, resource: object = None):
        super().__init__("not_found" if conceal else "forbidden",
                         NO_SUCH_RECORD if conceal else f"Access refused: {reason}.")
        self.action, self.reason, self.conceal, self.resource = action, reason, conceal, resource
        self.audited = True  # authorize() records every decision before raising


class AuditUnavailable(PortalError):
    """The audit log could not be written: the request fails closed and no PHI is served."""

    def __init__(self) -> None:
        super().__init__("audit_unavailable", "The audit log cannot be written right now, so records are not "
                                              "being served. Try again shortly.")


# --------------------------------------------------------------------------- the features' own refusals


class DateRangeError(InvalidInput):
    """A malformed date range; the message is safe to show to the user."""

    def __init__(self, message: str):
        super().__init__("bad_range", message)


class FilterError(InvalidInput):
    """A malformed search or export filter; the message is safe to show to the user."""

    def __init__(self, message: str):
        super().__init__("bad_filter", message)


class MessagingError(InvalidInput):
    """A refusal the client is told about as ``{code, message}`` (over HTTP, a 400)."""


class SearchLimitReached(LimitReached):
    """A search would show this user more distinct patients within the hour than the limit allows."""

    def __init__(self, limit: int, listed: int, new: int):
        super().__init__("search_limit", f"Searches may show you at most {limit} different patients in an hour, and "
                         "this one would go past that. Open patients from your care-team list, or ask a compliance "
                         "officer if you need more.")
        self.limit, self.listed, self.new = limit, listed, new

    def audit_details(self) -> dict[str, int]:
        return {"limit": self.limit, "listed_this_hour": self.listed, "new_in_results": self.new}


UNVERIFIED = "The audit log failed verification; the report cannot be issued. Compliance has been alerted."


class UnverifiedLog(Conflict):
    """An entry of the report is not proven to be in the signed tree: the log or its tree was changed."""

    def __init__(self, kind: str, position: int, problem: str):
        super().__init__("audit_log_unverified", UNVERIFIED)
        self.kind, self.position, self.problem = kind, position, problem

    def audit_details(self) -> dict[str, object]:
        return {"problem": self.kind, "position": self.position, "message": self.problem[:256]}


# --------------------------------------------------------------------------- sign-in
# Not PortalErrors: each has its own answer (a redirect, a sign-in failure page, an OIDC error body).


class StepUpRequired(Exception):
    """The action needs a fresh sign-in first; ``next_url`` is where to come back to, ``message`` says why,
    and ``link_token`` makes the link that starts it genuine (``portal.auth.step_up.link_token``)."""

    def __init__(self, action: str, next_url: str, message: str, link_token: str):
        super().__init__(action)
        self.action, self.next_url, self.message, self.link_token = action, next_url, message, link_token


class StepUpRefused(Exception):
    """The new ID token did not prove a fresh, strong enough sign-in by the same person."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class SignInError(RuntimeError):
    """The sign-in provider's discovery or answers failed a check the portal makes."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class LogoutTokenError(ValueError):
    """The logout token is forged, replayed, expired, mis-addressed or malformed; nothing is ended."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def found(value: T | None, message: str = NO_SUCH_RECORD) -> T:
    """``value``, or NotFound saying ``message`` when there is none (a row ``get`` did not find)."""
    if value is None:
        raise NotFound("not_found", message)
    return value
