"""The audit store failing: PHI requests get 503 with no PHI in the body; pages without PHI keep working."""
import re

import sqlalchemy as sa

from tests.support.portal_server import sign_in
from tests.support.seed import ALICE, ALICE_MRN


def test_no_phi_without_an_audit_record(portal_on_each_database):
    portal = portal_on_each_database
    alice, chen = sign_in(portal.url, "alice"), sign_in(portal.url, "dr.chen")
    engine = sa.create_engine(portal.env["PORTAL_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE audit_entry RENAME TO audit_entry_offline"))
    try:
        for session, path in ((alice, "/chart"), (alice, "/chart/fhir"), (chen, f"/patients/{ALICE}"),
                              (chen, f"/patients/search?mrn={ALICE_MRN}")):
            response = session.get(portal.url + path, timeout=10)
            assert response.status_code == 503, path
            assert "Moreau" not in response.text and ALICE_MRN not in response.text.replace(f"mrn={ALICE_MRN}", "")
        api = alice.get(portal.url + "/api/v1/me/chart", timeout=10)
        assert api.status_code == 503 and api.json()["error"]["code"] == "audit_unavailable"
        for path in ("/", "/auth/signin", "/healthz", "/static/css/portal.css"):
            assert alice.get(portal.url + path, timeout=10, allow_redirects=False).status_code in (200, 302), path
        assert alice.get(portal.url + "/readyz", timeout=10).status_code == 503
        metrics = alice.get(portal.url + "/metrics", headers={"Authorization": "Bearer test-metrics-token"}, timeout=10)
        failures = re.search(r"^portal_audit_failures_total (\S+)$", metrics.text, re.M)
        assert failures and float(failures.group(1)) >= 5  # one per refused PHI request above
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE audit_entry_offline RENAME TO audit_entry"))
        engine.dispose()
    assert alice.get(portal.url + "/chart", timeout=10).status_code == 200
