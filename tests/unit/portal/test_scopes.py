"""SMART scopes as the authorization server and the policy read them: v1, v2, restrictions, refusals, consent."""
from __future__ import annotations

import pytest

from portal.scopes import RESOURCE_TYPES, Category, ScopeError, ScopeSet, consent_items, parse_scope

LAB_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"


@pytest.mark.parametrize("text, resource_type, permissions", [
    ("patient/*.read", "*", {"r", "s"}),  # v1
    ("patient/Observation.read", "Observation", {"r", "s"}),
    ("patient/Observation.rs", "Observation", {"r", "s"}),  # v2
    ("patient/Condition.r", "Condition", {"r"}),
    ("patient/Patient.s", "Patient", {"s"}),
])
def test_read_scopes_v1_and_v2(text, resource_type, permissions):
    scope = parse_scope(text)
    assert (scope.resource_type, set(scope.permissions), scope.category) == (resource_type, permissions, None)


def test_a_category_restriction_keeps_its_system_when_given():
    scope = parse_scope(f"patient/Observation.rs?category={LAB_SYSTEM}|laboratory")
    assert scope.category == Category(LAB_SYSTEM, "laboratory")
    assert scope.text == f"patient/Observation.rs?category={LAB_SYSTEM}|laboratory"
    assert parse_scope("patient/Condition.rs?category=problem-list-item").category == Category(None, "problem-list-item")


@pytest.mark.parametrize("text", [
    "user/*.rs", "system/*.rs", "launch", "online_access", "profile", "patient/Encounter.rs", "patient/*.write",
    "patient/*.*", "patient/*.cruds", "patient/Observation.sr", "patient/Observation.", "patient/Observation.rs?code=1",
    "patient/Patient.rs?category=x", "patient/Observation.rs?category=a&code=b", "patient/Observation.rs?category=",
    "patient/Observation.rs?category=|", "x" * 400,
])
def test_anything_else_is_unsupported(text):
    with pytest.raises(ScopeError):
        ScopeSet.parse(f"launch/patient {text}")


def test_a_request_within_the_registration():
    allowed = ScopeSet.parse("launch/patient openid fhirUser offline_access patient/*.rs")
    assert ScopeSet.parse("launch/patient patient/Observation.rs?category=laboratory").within(allowed) == []
    assert ScopeSet.parse("patient/Condition.read fhirUser").within(allowed) == []
    narrow = ScopeSet.parse(f"patient/Observation.rs?category={LAB_SYSTEM}|laboratory")
    assert ScopeSet.parse(f"patient/Observation.r?category={LAB_SYSTEM}|laboratory").within(narrow) == []
    assert ScopeSet.parse("patient/Observation.rs").within(narrow) == ["patient/Observation.rs"]
    assert ScopeSet.parse("patient/Observation.rs?category=laboratory").within(narrow) == [
        "patient/Observation.rs?category=laboratory"]  # any system is wider than the registered one
    assert ScopeSet.parse("openid patient/*.rs").within(narrow) == ["openid", "patient/*.rs"]


def test_unticking_a_type_expands_a_wildcard_into_the_types_kept():
    scopes = ScopeSet.parse("launch/patient offline_access patient/*.rs")
    kept = scopes.without_types(["DocumentReference", "Patient"])
    assert kept.resource_types() == ["Condition", "MedicationRequest", "AllergyIntolerance", "Observation"]
    assert kept.others == ("launch/patient", "offline_access")
    assert not kept.permits("DocumentReference", "r") and kept.permits("Observation", "s")
    assert scopes.without_types([]) is scopes


def test_what_a_grant_permits():
    scopes = ScopeSet.parse(f"patient/Observation.rs?category={LAB_SYSTEM}|laboratory patient/Patient.r")
    assert scopes.permits("Observation", "r", [(LAB_SYSTEM, "laboratory")])
    assert not scopes.permits("Observation", "r", [(LAB_SYSTEM, "vital-signs")])
    assert scopes.permits("Observation", "s")  # narrowed by categories_for
    assert scopes.permits("Observation", "s", [(None, "laboratory")])
    assert not scopes.permits("Observation", "s", [(None, "vital-signs")])
    assert scopes.categories_for("Observation") == (Category(LAB_SYSTEM, "laboratory"),)
    assert scopes.permits("Patient", "r") and not scopes.permits("Patient", "s")
    assert ScopeSet.parse("patient/*.rs").categories_for("Observation") is None


def test_the_consent_page_words_every_type_and_its_restriction():
    items = consent_items(ScopeSet.parse("patient/*.read patient/Observation.rs?category=laboratory"))
    assert [item.resource_type for item in items] == list(RESOURCE_TYPES)
    assert all(item.words and item.detail == "read and list" for item in items)
    only = consent_items(ScopeSet.parse("patient/Observation.s?category=laboratory"))
    assert only[0].detail == "list — only laboratory results"
