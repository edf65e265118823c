"""FHIR searches of one chart: the parameters US Core asks for, checked; results filtered, sorted and paged.

Supported, per type (every search may also give ``_count``, ``_offset`` and ``_format=json``):

============== =====================================================
Patient         ``_id``, ``identifier``
Condition       ``patient``, ``category``, ``_id``
MedicationRequest ``patient``, ``intent``, ``status``, ``_id``
AllergyIntolerance ``patient``, ``_id``
Observation     ``patient``, ``category``, ``code``, ``date``, ``_id``
DocumentReference ``patient``, ``category``, ``_id``
============== =====================================================

Token parameters take ``code``, ``system|code``, ``|code`` or ``system|``, several separated by commas
(any of them); a repeated parameter must match each time. ``date`` takes ``eq``, ``gt``, ``ge``, ``lt``
or ``le`` before a date or date-time, at that value's precision. A parameter that is not supported, or
is malformed, is refused (400) rather than ignored: an ignored filter would return more than asked for.
Without ``patient`` a search is of the chart the app's token is for.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from urllib.parse import urlencode

from werkzeug.datastructures import MultiDict

from portal.exceptions import InvalidInput
from portal.scopes import Category
from portal.validation import parse_id

PAGE_DEFAULT, PAGE_MAX = 50, 100
OFFSET_MAX = 100_000
VALUE_MAX = 200
JSON_FORMATS = ("json", "application/json", "application/fhir+json")
TOKEN_PARAMS = {"identifier", "category", "code", "intent", "status"}
PARAMS = {
    "Patient": ("_id", "identifier"),
    "Condition": ("patient", "category", "_id"),
    "MedicationRequest": ("patient", "intent", "status", "_id"),
    "AllergyIntolerance": ("patient", "_id"),
    "Observation": ("patient", "category", "code", "date", "_id"),
    "DocumentReference": ("patient", "category", "_id"),
}
PAGING = ("_count", "_offset", "_format")
SINGLE = frozenset({"patient", "_id", "_count", "_offset", "_format"})
_DATE = re.compile(r"^(?P<prefix>[a-z]{2})?(?P<value>\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?"
                   r"(Z|[+-]\d{2}:\d{2})?)?)?)?)$")
DATE_PREFIXES = ("eq", "gt", "ge", "lt", "le")


def bad(message: str) -> InvalidInput:
    return InvalidInput("bad_search", message)


@dataclass(frozen=True)
class TokenValue:
    """One ``system|code`` alternative; ``system`` "" means explicitly no system, None means any."""

    system: str | None
    code: str | None

    @classmethod
    def parse(cls, text: str) -> TokenValue:
        if "|" not in text:
            return cls(None, text)
        system, _, code = text.partition("|")
        if not system and not code:
            raise bad("A token parameter needs a code, system|code, |code or system|.")
        return cls(system, code or None)

    def matches(self, system: str | None, code: str | None) -> bool:
        if self.code is not None and self.code != code:
            return False
        if self.system is None:
            return True
        return (system or "") == self.system


@dataclass(frozen=True)
class DateValue:
    """``date=<prefix><value>``: the value covers [low, high) at its precision."""

    prefix: str
    low: datetime
    high: datetime

    @classmethod
    def parse(cls, text: str) -> DateValue:
        match = _DATE.match(text)
        if match is None:
            raise bad("date takes a prefix (eq, gt, ge, lt, le) and YYYY, YYYY-MM, YYYY-MM-DD or a date-time with "
                      "its time zone.")
        prefix, value = match["prefix"] or "eq", match["value"]
        if prefix not in DATE_PREFIXES:
            raise bad(f"The date prefix {prefix!r} is not supported: use eq, gt, ge, lt or le.")
        try:
            low, high = _interval(value)
        except (ValueError, OverflowError):  # OverflowError: the interval would end past year 9999 or before 1
            raise bad(f"{value!r} is not a valid date.") from None
        return cls(prefix, low, high)

    def matches(self, moment: datetime) -> bool:
        return {"eq": self.low <= moment < self.high, "gt": moment >= self.high, "ge": moment >= self.low,
                "lt": moment < self.low, "le": moment < self.high}[self.prefix]


def _interval(value: str) -> tuple[datetime, datetime]:
    if len(value) == 4:
        low = datetime(int(value), 1, 1, tzinfo=timezone.utc)
        return low, low.replace(year=low.year + 1)
    if len(value) == 7:
        low = datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=timezone.utc)
        return low, (low + timedelta(days=32)).replace(day=1)
    if len(value) == 10:
        low = datetime.combine(date.fromisoformat(value), time.min, tzinfo=timezone.utc)
        return low, low + timedelta(days=1)
    if value[-1] != "Z" and value[-6] not in "+-":
        raise ValueError("a date-time needs its time zone")
    low = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)
    clock = value[11:].rstrip("Z").split("+")[0].split("-")[0]
    step = timedelta(minutes=1) if clock.count(":") == 1 else timedelta(seconds=1) if "." not in clock else timedelta(
        microseconds=1)
    return low, low + step


@dataclass(frozen=True)
class SearchQuery:
    """A checked search of one chart."""

    resource_type: str
    patient_id: str
    ids: frozenset[str] | None = None
    tokens: tuple[tuple[str, tuple[TokenValue, ...]], ...] = ()
    dates: tuple[DateValue, ...] = ()
    count: int = PAGE_DEFAULT
    offset: int = 0
    given: tuple[tuple[str, str], ...] = field(default=())  # the parameters as asked, for the paging links

    @property
    def categories(self) -> tuple[tuple[str | None, str], ...]:
        """The categories the search asks for, as (system, code), for the scope decision."""
        return tuple((value.system or None, value.code or "") for name, values in self.tokens if name == "category"
                     for value in values)

    def link(self, base: str, offset: int) -> str:
        params = [(k, v) for k, v in self.given if k not in ("_offset", "_count")]
        params += [("_count", str(self.count)), ("_offset", str(offset))]
        return f"{base}/{self.resource_type}?{urlencode(params)}"


def parse(resource_type: str, args: MultiDict, token_patient: str) -> SearchQuery:
    """The search ``args`` ask for; InvalidInput naming the parameter when one is unsupported or malformed."""
    supported = PARAMS[resource_type]
    given: list[tuple[str, str]] = []
    for name in args:
        values = args.getlist(name)
        if name not in supported and name not in PAGING:
            raise bad(f"The search parameter {name[:40]!r} is not supported for {resource_type}; "
                      f"use {', '.join(supported + PAGING)}.")
        if name in SINGLE and len(values) > 1:
            raise bad(f"Give {name} once.")
        for value in values:
            if not value or len(value) > VALUE_MAX:
                raise bad(f"The value of {name} is empty or too long.")
            given.append((name, value))
    if args.get("_format", "json") not in JSON_FORMATS:
        raise bad("Only JSON is served (_format=json).")
    patient_id = _patient(resource_type, args, token_patient)
    ids = frozenset(parse_id(v, f"{resource_type} id") for v in args["_id"].split(",")) if "_id" in args else None
    tokens = tuple((name, tuple(TokenValue.parse(v) for v in value.split(",")))
                   for name, value in given if name in TOKEN_PARAMS)
    dates = tuple(DateValue.parse(value) for name, value in given if name == "date")
    return SearchQuery(resource_type, patient_id, ids, tokens, dates, _whole(args, "_count", PAGE_DEFAULT, PAGE_MAX),
                       _whole(args, "_offset", 0, OFFSET_MAX), tuple(given))


def _patient(resource_type: str, args: Mapping[str, str], token_patient: str) -> str:
    if resource_type == "Patient":
        ids = args.get("_id", "").split(",") if "_id" in args else []
        if len(ids) > 1:
            raise bad("Patient searches name one _id.")
        return parse_id(ids[0], "patient id") if ids else token_patient
    if "patient" not in args:
        return token_patient
    reference = args["patient"]
    return parse_id(reference.removeprefix("Patient/"), "patient reference")


def _whole(args: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    text = args.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) > maximum:  # "²".isdigit() is True
        raise bad(f"{name} is a whole number from 0 to {maximum}.")
    return int(text)


# --------------------------------------------------------------------------- running a search


def _codings(value: object) -> list[tuple[str | None, str | None]]:
    """(system, code) of every coding in a CodeableConcept, a list of them, or Identifiers."""
    concepts = value if isinstance(value, list) else [value] if value else []
    pairs = []
    for concept in concepts:
        if "coding" in concept:
            pairs += [(c.get("system"), c.get("code")) for c in concept["coding"]]
        elif "value" in concept:  # an Identifier
            pairs.append((concept.get("system"), concept["value"]))
    return pairs


FIELDS = {"category": "category", "code": "code", "identifier": "identifier"}


def _token_matches(resource: dict, name: str, values: Sequence[TokenValue]) -> bool:
    if name in ("intent", "status"):
        pairs = [(None, resource.get(name))]
    else:
        pairs = _codings(resource.get(FIELDS[name]))
    return any(value.matches(system, code) for value in values for system, code in pairs)


def _moment(resource: dict) -> datetime | None:
    text = resource.get("effectiveDateTime")
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def matching(query: SearchQuery, resources: Iterable[dict], allowed_categories: Sequence[Category] | None) -> list[dict]:
    """The resources the query matches, narrowed to ``allowed_categories`` when the app's scopes restrict them."""
    found = []
    for resource in resources:
        if query.ids is not None and resource["id"] not in query.ids:
            continue
        if not all(_token_matches(resource, name, values) for name, values in query.tokens):
            continue
        moment = _moment(resource)
        if query.dates and (moment is None or not all(d.matches(moment) for d in query.dates)):
            continue
        if allowed_categories is not None and not any(
                c.matches(system, code) for c in allowed_categories for system, code in _codings(resource.get("category"))):
            continue
        found.append(resource)
    return found


def searchset(query: SearchQuery, found: Sequence[dict], base: str) -> dict:
    """The page the query asks for, as a searchset Bundle with self, next and previous links."""
    page = found[query.offset:query.offset + query.count]
    links = [{"relation": "self", "url": query.link(base, query.offset)}]
    if query.offset + query.count < len(found) and query.count:
        links.append({"relation": "next", "url": query.link(base, query.offset + query.count)})
    if query.offset > 0 and query.count:
        links.append({"relation": "previous", "url": query.link(base, max(0, query.offset - query.count))})
    return {
        "resourceType": "Bundle", "type": "searchset", "total": len(found), "link": links,
        "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                  for r in page],
    }
