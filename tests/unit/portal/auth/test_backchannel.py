"""Forged logout tokens with unknown key ids must not make the portal fetch the provider's keys every time."""
from __future__ import annotations

import pytest
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import RSAKey

from portal.auth import backchannel


def test_an_unknown_key_id_refetches_the_providers_keys_at_most_once_a_minute(monkeypatch) -> None:
    published = RSAKey.generate_key(2048, parameters={"kid": "published"})
    fetches: list[bool] = []

    def fetch_jwk_set(force: bool = False) -> dict:
        fetches.append(force)
        return {"keys": [published.as_dict(private=False)]}

    monkeypatch.setattr(backchannel, "_last_refetch", -backchannel.JWKS_REFETCH_EVERY)
    clock = [1000.0]
    monkeypatch.setattr(backchannel.time, "monotonic", lambda: clock[0])
    forged = [jwt.encode({"alg": "RS256", "kid": f"forged-{n}"}, {"n": n},
                         RSAKey.generate_key(2048, parameters={"kid": f"forged-{n}"})) for n in range(3)]
    for token in forged:
        with pytest.raises(InvalidKeyIdError):
            backchannel._decode(token, fetch_jwk_set, ["RS256"])
    assert fetches.count(True) == 1  # one refetch for three forged tokens within the minute

    clock[0] += backchannel.JWKS_REFETCH_EVERY
    with pytest.raises(InvalidKeyIdError):
        backchannel._decode(forged[0], fetch_jwk_set, ["RS256"])
    assert fetches.count(True) == 2  # a minute later a real key rotation is picked up again

    genuine = jwt.encode({"alg": "RS256", "kid": "published"}, {"n": 1}, published)
    assert backchannel._decode(genuine, fetch_jwk_set, ["RS256"]).claims == {"n": 1}
