"""What a step-up ID token must prove: the same person, signed in recently enough, strongly enough."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from portal.auth.step_up import check_claims
from portal.exceptions import StepUpRefused
from portal.models import User

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=timezone.utc)
ISSUER = "https://idp.example.test"
MFA = "urn:example:mfa"


def _user() -> User:
    return User(issuer=ISSUER, subject="demo-reyes")


def _claims(seconds_ago: float | None = 10, **changes) -> dict:
    claims = {"sub": "demo-reyes", "acr": MFA}
    if seconds_ago is not None:
        claims["auth_time"] = int((NOW - timedelta(seconds=seconds_ago)).timestamp())
    claims.update(changes)
    return claims


def _check(claims: dict, issuer: str = ISSUER, accepted: list[str] | None = None):
    return check_claims(_user(), issuer, claims, max_age=300, accepted_acr=[MFA] if accepted is None else accepted,
                        now=NOW)


def test_a_recent_strong_sign_in_by_the_same_person_passes() -> None:
    proof = _check(_claims(seconds_ago=299))
    assert proof.acr == MFA and proof.auth_time == NOW - timedelta(seconds=299)


def test_without_a_required_acr_any_recent_sign_in_passes() -> None:
    assert _check(_claims(acr=None), accepted=[]).acr is None


@pytest.mark.parametrize("claims, issuer, code", [
    (_claims(seconds_ago=301 + 30), ISSUER, "step_up_stale"),        # older than max_age plus the clock leeway
    (_claims(seconds_ago=-120), ISSUER, "step_up_stale"),            # a sign-in "in the future"
    (_claims(seconds_ago=None), ISSUER, "step_up_no_auth_time"),
    (_claims(auth_time="yesterday"), ISSUER, "step_up_no_auth_time"),
    (_claims(auth_time=True), ISSUER, "step_up_no_auth_time"),
    (_claims(acr="urn:example:password"), ISSUER, "step_up_weak"),
    (_claims(acr=None), ISSUER, "step_up_weak"),
    (_claims(sub="demo-okafor"), ISSUER, "step_up_other_user"),
    (_claims(), "https://another-idp.example.test", "step_up_other_user"),
], ids=["stale", "future", "no-auth-time", "auth-time-text", "auth-time-bool", "weak-acr", "no-acr",
        "other-subject", "other-issuer"])
def test_a_token_that_proves_less_is_refused(claims: dict, issuer: str, code: str) -> None:
    with pytest.raises(StepUpRefused) as refused:
        _check(claims, issuer)
    assert refused.value.code == code
