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
    """The request carries no valid credentials: an app's token is missing, malformed, expired or revoked.
    ``token_error`` is the RFC 6750 error code the challenge names (None when no token was sent at all)."""

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


def found(value: T | None, message: str = NO_SUCH_RECORD) -> T:
    """``value``, or NotFound saying ``message`` when there is none (a row ``get`` did not find)."""
    if value is None:
        raise NotFound("not_found", message)
    return value
