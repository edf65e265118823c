"""A tampering OpenID issuer in front of the real npm provider, for ID-token verification tests.

The portal is configured with ``PORTAL_OIDC_ISSUER = proxy.issuer``. The proxy serves its own
discovery document and JWKS (keys the test controls: RS256 and ES256). Everything a person does
(authorization, login, consent) and the userinfo call still go to the real npm provider: the
discovery document points there. Only the token endpoint goes through the proxy, which forwards the
request to the npm provider, verifies the provider's real ID token (signature, issuer, audience),
then re-issues the same claims under the proxy's issuer, signed with the test's key, applying the
tampering the test asked for. The portal verifies the result itself.

    with TamperProxy(npm.issuer, client_id) as proxy:
        proxy.mode = "wrong_nonce"      # see MODES
        proxy.alg = "ES256"
        proxy.rotate("RS256")           # a new key, published and signing from now on
"""
from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

MODES = (
    "honest",            # same claims, proxy issuer, signed with the published key for `alg`
    "wrong_nonce",       # nonce replaced
    "wrong_aud",         # audience is another client
    "wrong_aud_azp",     # audience is another client, but azp names this one
    "wrong_iss",         # issuer is the npm provider's (valid signature, not the configured issuer)
    "expired",           # exp half an hour ago (well past any leeway)
    "alg_none",          # unsigned token, header alg "none"
    "tampered_payload",  # validly signed, then the payload swapped for one naming an administrator
    "foreign_key",       # signed with a key that is not published, under the published kid
    "unknown_kid",       # signed with a key whose kid is never published
    "hs256_secret",      # HS256 with the client secret as the key (the classic algorithm confusion)
    "no_id_token",       # the token response carries no ID token at all
    "stale_auth_time",   # auth_time an hour ago: a sign-in too old for a step-up
    "no_auth_time",      # auth_time removed
    "weak_acr",          # acr says a weaker authentication than the one asked for
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _new_key(alg: str, kid: str):
    if alg == "RS256":
        return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": alg, "use": "sig"})
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters={"kid": kid, "alg": alg, "use": "sig"})
    raise ValueError(f"unsupported alg {alg}")


class TamperProxy:
    def __init__(self, upstream_issuer: str, client_id: str, client_secret: str = "") -> None:
        self.upstream_issuer = upstream_issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.mode = "honest"
        self.alg = "RS256"
        self.jwks_requests = 0
        self.token_requests = 0
        self.issued: list[dict[str, Any]] = []   # {"header", "claims", "mode"} of each re-issued token
        self.errors: list[str] = []              # upstream tokens the proxy itself could not verify
        self._lock = threading.Lock()
        self._generation = 0
        self._signing: dict[str, Any] = {}
        self._published: list[Any] = []
        for alg in ("RS256", "ES256"):
            self.rotate(alg)
        self._upstream_meta: dict[str, Any] | None = None
        self._upstream_keys: KeySet | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- keys -------------------------------------------------------------------------------------------------
    def rotate(self, alg: str) -> str:
        """Make a new key for ``alg``: published in the JWKS and used for signing from now on; returns its kid."""
        with self._lock:
            self._generation += 1
            kid = f"proxy-{alg.lower()}-{self._generation}"
            key = _new_key(alg, kid)
            self._signing[alg] = key
            self._published.append(key)
            return kid

    def signing_kid(self, alg: str | None = None) -> str:
        return self._signing[alg or self.alg].kid

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [key.as_dict(private=False) for key in self._published]}

    # -- server -----------------------------------------------------------------------------------------------
    @property
    def issuer(self) -> str:
        assert self._server is not None, "proxy not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> TamperProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/.well-known/openid-configuration":
                    self._json(200, proxy.discovery())
                elif path == "/jwks":
                    with proxy._lock:
                        proxy.jwks_requests += 1
                    self._json(200, proxy.jwks())
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                if self.path.split("?", 1)[0] != "/token":
                    self._json(404, {"error": "not_found"})
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: self.headers[k] for k in ("Authorization", "Content-Type", "Accept") if self.headers.get(k)}
                status, payload = proxy.exchange(body, headers)
                self._json(status, payload)

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="tamper-proxy", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- OpenID -----------------------------------------------------------------------------------------------
    def upstream_meta(self) -> dict[str, Any]:
        if self._upstream_meta is None:
            response = requests.get(f"{self.upstream_issuer}/.well-known/openid-configuration", timeout=5)
            response.raise_for_status()
            self._upstream_meta = response.json()
        return self._upstream_meta

    def discovery(self) -> dict[str, Any]:
        meta = dict(self.upstream_meta())
        meta.update(
            issuer=self.issuer,
            jwks_uri=f"{self.issuer}/jwks",
            token_endpoint=f"{self.issuer}/token",
            # Deliberately offers what a careful relying party must still refuse for ID tokens.
            id_token_signing_alg_values_supported=["RS256", "ES256", "HS256", "none"],
        )
        # The authorization response comes straight from the npm provider and names it as `iss`.
        meta.pop("authorization_response_iss_parameter_supported", None)
        return meta

    def _verify_upstream(self, id_token: str) -> dict[str, Any]:
        """The proxy only ever re-issues what the real provider really issued."""
        for force in (False, True):
            if self._upstream_keys is None or force:
                jwks = requests.get(self.upstream_meta()["jwks_uri"], timeout=5).json()
                self._upstream_keys = KeySet.import_key_set(jwks)
            try:
                token = jwt.decode(id_token, self._upstream_keys, algorithms=["RS256", "ES256"])
                break
            except InvalidKeyIdError:
                if force:
                    raise
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.upstream_issuer},
            aud={"essential": True, "value": self.client_id},
            exp={"essential": True},
            nonce={"essential": True},
        ).validate(token.claims)
        return dict(token.claims)

    def exchange(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.token_requests += 1
        upstream = requests.post(self.upstream_meta()["token_endpoint"], data=body, headers=headers, timeout=10)
        try:
            payload = upstream.json()
        except ValueError:
            return 502, {"error": "server_error", "error_description": "upstream sent no JSON"}
        if upstream.status_code != 200 or "id_token" not in payload:
            return upstream.status_code, payload  # e.g. invalid_grant for a reused code: relayed as is
        try:
            claims = self._verify_upstream(payload["id_token"])
        except Exception as exc:  # noqa: BLE001 - reported to the test through `errors`
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return 502, {"error": "server_error", "error_description": "proxy could not verify the upstream ID token"}
        mode = self.mode
        if mode == "no_id_token":
            del payload["id_token"]
        else:
            payload["id_token"] = self.reissue(claims, mode)
        return 200, payload

    def reissue(self, upstream_claims: dict[str, Any], mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        claims = dict(upstream_claims, iss=self.issuer)
        now = int(time.time())
        if mode == "wrong_nonce":
            claims["nonce"] = "not-the-nonce-the-portal-sent"
        elif mode == "wrong_aud":
            claims["aud"] = "some-other-client"
        elif mode == "wrong_aud_azp":
            claims.update(aud="some-other-client", azp=self.client_id)
        elif mode == "wrong_iss":
            claims["iss"] = self.upstream_issuer
        elif mode == "expired":
            claims.update(iat=now - 3600, exp=now - 1800, auth_time=now - 3600)
        elif mode == "stale_auth_time":
            claims["auth_time"] = now - 3600
        elif mode == "no_auth_time":
            claims.pop("auth_time", None)
        elif mode == "weak_acr":
            claims["acr"] = "urn:portal:test:password-only"

        key = self._signing[self.alg]
        header: dict[str, Any] = {"alg": self.alg, "kid": key.kid, "typ": "JWT"}
        if mode == "alg_none":
            header = {"alg": "none", "typ": "JWT"}
            token = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."
        elif mode == "hs256_secret":
            header = {"alg": "HS256", "typ": "JWT"}
            token = jwt.encode(header, claims, OctKey.import_key(self.client_secret.encode()), algorithms=["HS256"])
        elif mode == "foreign_key":
            token = jwt.encode(header, claims, _new_key(self.alg, key.kid), algorithms=[self.alg])
        elif mode == "unknown_kid":
            header["kid"] = f"never-published-{now}"
            token = jwt.encode(header, claims, _new_key(self.alg, header["kid"]), algorithms=[self.alg])
        else:
            token = jwt.encode(header, claims, key, algorithms=[self.alg])
        if mode == "tampered_payload":
            forged = dict(claims, sub="demo-adam", roles=["admin"], name="Adam Novak")
            head, _, signature = token.split(".")
            token = f"{head}.{_b64(json.dumps(forged).encode())}.{signature}"
        self.issued.append({"header": header, "claims": claims, "mode": mode})
        return token
