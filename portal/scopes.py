"""SMART App Launch scopes (v1 and v2): what an app asks for, what a grant permits, in plain words.

A leaf module: the access policy asks it whether a grant covers a FHIR interaction, the
authorization server whether a request is supported and within an app's registration, and the
consent page how to say it. Only patient-level read access is offered: ``patient/<type>.rs`` (v2),
``patient/<type>.read`` (v1), ``*`` for every type, and a ``?category=`` restriction for
Observation and Condition; ``launch/patient``, ``openid``, ``fhirUser`` and ``offline_access``.
Anything else is unsupported, and a request naming it is refused rather than quietly narrowed.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

RESOURCE_TYPES = ("Patient", "Condition", "MedicationRequest", "AllergyIntolerance", "Observation", "DocumentReference")
CATEGORY_RESTRICTABLE = frozenset({"Observation", "Condition"})
OFFLINE_ACCESS = "offline_access"
OPENID, FHIR_USER, LAUNCH_PATIENT = "openid", "fhirUser", "launch/patient"
OTHER_SCOPES = (LAUNCH_PATIENT, OPENID, FHIR_USER, OFFLINE_ACCESS)
READ, SEARCH = "r", "s"
MAX_SCOPES = 40
MAX_SCOPE_LENGTH = 300

_RESOURCE_SCOPE = re.compile(r"^(?P<context>[a-z]+)/(?P<type>[A-Za-z]+|\*)\.(?P<permissions>[a-z*]+)(?:\?(?P<query>.+))?$")
_V2_PERMISSIONS = re.compile(r"^c?r?u?d?s?$")

# How the consent page and the Connected apps page name each type, in words a patient reads.
TYPE_WORDS = {
    "Patient": "Your personal details (name, date of birth, contact details, MRN)",
    "Condition": "Your problems and diagnoses",
    "MedicationRequest": "Your medications",
    "AllergyIntolerance": "Your allergies",
    "Observation": "Your test results",
    "DocumentReference": "Your visit notes",
}
CATEGORY_WORDS = {"laboratory": "laboratory results", "problem-list-item": "your problem list",
                  "health-concern": "health concerns"}


class ScopeError(ValueError):
    """A scope this server does not offer, or one the app is not registered for; the message names it."""


@dataclass(frozen=True)
class Category:
    """A ``?category=`` restriction: a code, with its system when the scope names one."""

    system: str | None
    code: str

    @classmethod
    def parse(cls, value: str) -> Category:
        system, bar, code = unquote(value).rpartition("|")
        if not code or (bar and not system):
            raise ScopeError(f"The category {value!r} is not a code or system|code.")
        return cls(system or None, code)

    def matches(self, system: str | None, code: str) -> bool:
        return self.code == code and (self.system is None or self.system == system)

    def overlaps(self, system: str | None, code: str) -> bool:
        """Whether a search for ``system|code`` (any system when None) can find resources this restriction admits;
        the results are then narrowed to it (``ScopeSet.categories_for``)."""
        return self.code == code and (system is None or self.system is None or self.system == system)

    def within(self, other: Category) -> bool:
        """True when every resource this restriction admits, ``other`` admits too."""
        return self.code == other.code and (other.system is None or other.system == self.system)

    @property
    def text(self) -> str:
        return f"{self.system}|{self.code}" if self.system else self.code


@dataclass(frozen=True)
class ResourceScope:
    """``patient/<type>.<permissions>[?category=...]``: read (r) and search (s) of one type, or of all (``*``)."""

    resource_type: str
    permissions: frozenset[str]
    category: Category | None = None

    @property
    def text(self) -> str:
        permissions = "".join(p for p in (READ, SEARCH) if p in self.permissions)
        query = f"?category={self.category.text}" if self.category else ""
        return f"patient/{self.resource_type}.{permissions}{query}"

    def applies_to(self, resource_type: str, interaction: str) -> bool:
        return self.resource_type in ("*", resource_type) and interaction in self.permissions

    def within(self, other: ResourceScope) -> bool:
        """True when ``other`` (an app's registration) allows everything this scope asks for."""
        if other.resource_type not in ("*", self.resource_type) or not self.permissions <= other.permissions:
            return False
        if other.category is None:
            return True
        return self.category is not None and self.category.within(other.category)


def parse_scope(text: str) -> ResourceScope | str:
    """One scope: a ResourceScope, or the name of a supported non-resource scope; ScopeError otherwise."""
    if text in OTHER_SCOPES:
        return text
    match = _RESOURCE_SCOPE.match(text) if len(text) <= MAX_SCOPE_LENGTH else None
    if match is None:
        raise ScopeError(f"The scope {text[:80]!r} is not supported.")
    if match["context"] != "patient":
        raise ScopeError(f"The scope {text[:80]!r} is not supported: apps connected by a patient get patient/ scopes.")
    resource_type = match["type"]
    if resource_type != "*" and resource_type not in RESOURCE_TYPES:
        raise ScopeError(f"The scope {text[:80]!r} names a resource type this server does not offer.")
    permissions = _permissions(match["permissions"], text)
    category = _category(match["query"], resource_type, text) if match["query"] else None
    return ResourceScope(resource_type, permissions, category)


def _permissions(value: str, text: str) -> frozenset[str]:
    if value == "read":  # SMART v1
        return frozenset({READ, SEARCH})
    if value in ("write", "*") or (_V2_PERMISSIONS.match(value) and set(value) & set("cud")):
        raise ScopeError(f"The scope {text[:80]!r} asks to change records; this server offers read access only.")
    if not value or not _V2_PERMISSIONS.match(value):
        raise ScopeError(f"The scope {text[:80]!r} has permissions this server does not understand.")
    return frozenset(value)


def _category(query: str, resource_type: str, text: str) -> Category:
    name, equals, value = query.partition("=")
    if resource_type not in CATEGORY_RESTRICTABLE or name != "category" or not equals or "&" in value:
        raise ScopeError(f"The scope {text[:80]!r} has a restriction this server does not support "
                         f"(only ?category= on {' and '.join(sorted(CATEGORY_RESTRICTABLE))}).")
    return Category.parse(value)


@dataclass(frozen=True)
class ScopeSet:
    """The scopes of a request, a grant or a token, in their order; duplicates removed."""

    resources: tuple[ResourceScope, ...] = ()
    others: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> ScopeSet:
        names = list(dict.fromkeys((text or "").split()))
        if len(names) > MAX_SCOPES:
            raise ScopeError(f"At most {MAX_SCOPES} scopes can be asked for at once.")
        parsed = [parse_scope(name) for name in names]
        return cls(tuple(p for p in parsed if isinstance(p, ResourceScope)), tuple(p for p in parsed if isinstance(p, str)))

    @property
    def text(self) -> str:
        return " ".join([*self.others, *dict.fromkeys(scope.text for scope in self.resources)])

    @property
    def names(self) -> list[str]:
        return self.text.split()

    def has(self, name: str) -> bool:
        return name in self.others

    @property
    def offline(self) -> bool:
        return OFFLINE_ACCESS in self.others

    def within(self, allowed: ScopeSet) -> list[str]:
        """The scopes of this set that ``allowed`` (an app's registration) does not cover."""
        outside = [name for name in self.others if name not in allowed.others]
        outside += [scope.text for scope in self.resources if not any(scope.within(a) for a in allowed.resources)]
        return outside

    def resource_types(self) -> list[str]:
        """Every type some scope reaches, wildcards expanded, in the server's order."""
        named = {scope.resource_type for scope in self.resources}
        return [t for t in RESOURCE_TYPES if "*" in named or t in named]

    def without_types(self, removed: Iterable[str]) -> ScopeSet:
        """The set with every scope for ``removed`` types taken out; a wildcard becomes one scope per type kept."""
        removed = set(removed)
        if not removed:
            return self
        kept: list[ResourceScope] = []
        for scope in self.resources:
            if scope.resource_type == "*":
                kept += [ResourceScope(t, scope.permissions) for t in RESOURCE_TYPES if t not in removed]
            elif scope.resource_type not in removed:
                kept.append(scope)
        return ScopeSet(tuple(dict.fromkeys(kept)), self.others)

    def permits(self, resource_type: str, interaction: str, categories: Iterable[tuple[str | None, str]] = ()) -> bool:
        """Whether these scopes cover reading (``r``) or searching (``s``) ``resource_type``.

        ``categories`` are the resource's (a read) or those the search asks for. A search that names no
        category is covered by a category-restricted scope too: its results are narrowed by ``categories_for``.
        """
        scopes = [scope for scope in self.resources if scope.applies_to(resource_type, interaction)]
        if any(scope.category is None for scope in scopes):
            return True
        categories = list(categories)
        if not categories:
            return bool(scopes) and interaction == SEARCH
        restrictions = [scope.category for scope in scopes if scope.category is not None]
        if interaction == READ:  # a resource in any permitted category may be read
            return any(r.matches(system, code) for r in restrictions for system, code in categories)
        return all(any(r.overlaps(system, code) for r in restrictions) for system, code in categories)

    def categories_for(self, resource_type: str) -> tuple[Category, ...] | None:
        """The categories a search of ``resource_type`` is narrowed to; None when it is not narrowed."""
        scopes = [scope for scope in self.resources if scope.applies_to(resource_type, SEARCH)]
        if not scopes or any(scope.category is None for scope in scopes):
            return None
        return tuple(scope.category for scope in scopes if scope.category is not None)


@dataclass(frozen=True)
class ConsentItem:
    """One line of the consent page: a resource type the app asks for, in words, and any restriction."""

    resource_type: str
    words: str
    detail: str


def consent_items(scopes: ScopeSet) -> list[ConsentItem]:
    items = []
    for resource_type in scopes.resource_types():
        applicable = [s for s in scopes.resources if s.resource_type in ("*", resource_type)]
        permissions = frozenset().union(*(s.permissions for s in applicable))
        restrictions = [s.category for s in applicable if s.category is not None]
        unrestricted = any(s.category is None for s in applicable)
        detail = _permission_words(permissions)
        if restrictions and not unrestricted:
            detail += " — only " + ", ".join(CATEGORY_WORDS.get(c.code, c.code) for c in restrictions)
        items.append(ConsentItem(resource_type, TYPE_WORDS[resource_type], detail))
    return items


def _permission_words(permissions: frozenset[str]) -> str:
    if permissions >= {READ, SEARCH}:
        return "read and list"
    return "list" if SEARCH in permissions else "read items it already knows of"
