"""What the FHIR server tells apps about itself: the CapabilityStatement and SMART's discovery document."""
from __future__ import annotations

from dataclasses import dataclass

from portal.fhir.search import PARAMS
from portal.records.fhir import PROFILES
from portal.scopes import RESOURCE_TYPES

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
US_CORE_SERVER = "http://hl7.org/fhir/us/core/CapabilityStatement/us-core-server"
SEARCH_PARAM_TYPES = {"_id": "token", "identifier": "token", "patient": "reference", "category": "token",
                      "code": "token", "date": "date", "intent": "token", "status": "token"}
CAPABILITIES = ("launch-standalone", "client-public", "client-confidential-symmetric", "context-standalone-patient",
                "permission-patient", "permission-offline", "permission-v1", "permission-v2", "sso-openid-connect")
SCOPES_SUPPORTED = ("openid", "fhirUser", "launch/patient", "offline_access", "patient/*.rs", "patient/*.read",
                    *(f"patient/{t}.rs" for t in RESOURCE_TYPES), *(f"patient/{t}.read" for t in RESOURCE_TYPES))


@dataclass(frozen=True)
class Endpoints:
    """The absolute addresses of the FHIR base and of the authorization server's endpoints."""

    fhir_base: str
    authorize: str
    token: str
    revoke: str
    introspect: str
    manage: str
    jwks: str


def smart_configuration(endpoints: Endpoints) -> dict:
    """``/.well-known/smart-configuration`` (SMART App Launch 2): where to authorize, and what is supported."""
    return {
        "issuer": endpoints.fhir_base,
        "jwks_uri": endpoints.jwks,
        "authorization_endpoint": endpoints.authorize,
        "token_endpoint": endpoints.token,
        "revocation_endpoint": endpoints.revoke,
        "introspection_endpoint": endpoints.introspect,
        "management_endpoint": endpoints.manage,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "response_types_supported": ["code"],
        "scopes_supported": list(SCOPES_SUPPORTED),
        "code_challenge_methods_supported": ["S256"],
        "capabilities": list(CAPABILITIES),
    }


def openid_configuration(endpoints: Endpoints) -> dict:
    """The same, as OpenID Connect Discovery: the ID token's issuer is the FHIR base."""
    return {
        **smart_configuration(endpoints),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["sub", "fhirUser", "iss", "aud", "exp", "iat", "auth_time", "nonce"],
    }


def capability_statement(endpoints: Endpoints, published: str) -> dict:
    """An R4 CapabilityStatement: read and search of the US Core profiles served, with SMART's oauth-uris."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "Riverside Clinic",
        "kind": "instance",
        "instantiates": [US_CORE_SERVER],
        "software": {"name": "Riverside Clinic patient portal"},
        "implementation": {"description": "Patient access API (SMART on FHIR, US Core)", "url": endpoints.fhir_base},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": {
                "extension": [{"url": OAUTH_URIS, "extension": [
                    {"url": "authorize", "valueUri": endpoints.authorize},
                    {"url": "token", "valueUri": endpoints.token},
                    {"url": "revoke", "valueUri": endpoints.revoke},
                    {"url": "introspect", "valueUri": endpoints.introspect},
                    {"url": "manage", "valueUri": endpoints.manage},
                ]}],
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                         "code": "SMART-on-FHIR"}]}],
                "description": "OAuth 2.0 bearer tokens from the SMART App Launch authorization server",
            },
            "resource": [_resource(resource_type) for resource_type in RESOURCE_TYPES],
        }],
    }


def _resource(resource_type: str) -> dict:
    return {
        "type": resource_type,
        "supportedProfile": [PROFILES[resource_type]],
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [{"name": name, "type": SEARCH_PARAM_TYPES[name]} for name in PARAMS[resource_type]],
    }
