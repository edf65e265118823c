"""Blind indexes: deterministic HMAC-SHA256 search terms for encrypted columns.

A term is ``<index_key_id>:<first 32 hex chars of HMAC>`` computed under an
index key (never an encryption key) over ``"<table>.<index column>" NUL
<normalised value>``; the table and column name separate domains so equal
values in different columns do not produce linkable terms.

Exact-match only: a blind index reveals which rows share a normalised value,
which is the accepted trade-off for searching by MRN or name.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import MappedColumn, mapped_column

from .keyring import Keyring

Normaliser = Callable[[Any], str]
TERM_HEX_CHARS = 32
INFO_KEY = "portal_crypto_blind_index"
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2212"


def normalise_text(value: str) -> str:
    """NFKD, strip accents, casefold, collapse whitespace; typographic apostrophes become '."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.translate(_APOSTROPHES).casefold().split())


def normalise_identifier(value: str) -> str:
    """Uppercase and drop whitespace and dashes: ``"ab-12 3"`` -> ``"AB123"``."""
    kept = (ch for ch in value if not ch.isspace() and ch not in _DASHES)
    return "".join(kept).upper()


def normalise_date(value: datetime.date | str) -> str:
    """ISO ``YYYY-MM-DD``; accepts a date or an ISO date string."""
    if isinstance(value, datetime.datetime):
        raise TypeError("normalise_date() needs a date, not a datetime")
    if isinstance(value, str):
        value = datetime.date.fromisoformat(value.strip())
    return value.isoformat()


@dataclass(frozen=True)
class BlindIndexInfo:
    """Stored in the index column's ``info``; read by the ORM registry."""

    source: str
    normaliser: Normaliser


def blind_index_column(source: str, normaliser: Normaliser = normalise_text) -> MappedColumn[Any]:
    """Indexed, nullable column the ORM events fill from the plaintext of ``source``."""
    info = {INFO_KEY: BlindIndexInfo(source, normaliser)}
    return mapped_column(String(80), nullable=True, index=True, info=info)


def compute_term(keyring: Keyring, key_id: str, domain: str, normalised: str) -> str:
    """The blind-index term of an already normalised value under one index key."""
    message = domain.encode("utf-8") + b"\x00" + normalised.encode("utf-8")
    digest = hmac.new(keyring.index_key(key_id), message, hashlib.sha256).hexdigest()
    return f"{key_id}:{digest[:TERM_HEX_CHARS]}"
