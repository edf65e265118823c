"""Checks on what people send, shared by every feature that takes it: identifiers, MRNs and free text."""
from __future__ import annotations

import json
import re
import uuid
from typing import Any

from flask import request

from portal.exceptions import InvalidInput

_MRN = re.compile(r"^[A-Za-z0-9 -]{3,32}$")


def parse_id(value: str, what: str = "patient id") -> str:
    """Identifiers are UUIDs; anything else is refused as input, never looked up."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidInput("malformed_id", f"The {what} is malformed.") from None


def checked_mrn(mrn: str) -> str:
    """The MRN without surrounding spaces; refused when it cannot be one."""
    mrn = (mrn or "").strip()
    if not _MRN.match(mrn):
        raise InvalidInput("bad_mrn", "An MRN has 3 to 32 letters, digits, spaces or dashes.")
    return mrn


def is_storable_text(value: str) -> bool:
    """False for text no store can keep: a lone surrogate (UTF-8 cannot encode it, yet JSON can carry one)
    or a NUL character (PostgreSQL refuses it)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_object() -> dict[str, Any]:
    """The request's JSON body, which must be an object; anything else (not JSON, nested past what the
    parser allows, a list) is refused as input, never an error of ours."""
    try:
        body = json.loads(request.get_data(cache=True))
    except (ValueError, RecursionError):
        raise InvalidInput("bad_json", "Send a JSON object.") from None
    if not isinstance(body, dict):
        raise InvalidInput("bad_json", "Send a JSON object.")
    return body
