"""Checks on the text people send, shared by every feature that stores it."""
from __future__ import annotations


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
