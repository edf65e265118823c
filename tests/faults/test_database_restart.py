"""PostgreSQL restarted under load: in-flight requests fail cleanly, service resumes, no audit event is lost."""
import threading
import time

import pytest
import sqlalchemy as sa

from audit import SqlAuditStore, load_signing_key, verify_store
from tests.support.portal_server import running_portal, sign_in
from tests.support.seed import ALICE

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_postgres_restart_fails_cleanly_and_recovers(private_postgres, tmp_path):
    with running_portal(tmp_path / "portal", private_postgres.url) as portal:
        session = sign_in(portal.url, "dr.chen")
        statuses, stop = [], threading.Event()

        def read_charts():
            while not stop.is_set():
                try:
                    statuses.append(session.get(f"{portal.url}/api/v1/patients/{ALICE}", timeout=10).status_code)
                except Exception as exc:  # noqa: BLE001 - a dropped connection is recorded, not raised
                    statuses.append(type(exc).__name__)

        readers = [threading.Thread(target=read_charts) for _ in range(3)]
        for reader in readers:
            reader.start()
        time.sleep(1.0)
        private_postgres.stop("fast")
        time.sleep(1.5)
        private_postgres.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and statuses[-1:] != [200]:
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        for reader in readers:
            reader.join()

        assert set(statuses) <= {200, 503}, sorted(set(map(str, statuses)))
        assert 503 in statuses and statuses[-1] == 200
        served = statuses.count(200)

        engine = sa.create_engine(private_postgres.url)
        store = SqlAuditStore(engine, None)
        report = verify_store(store, load_signing_key(portal.env["PORTAL_AUDIT_SIGNING_KEY"]).verify_key)
        assert report.ok, report.summary()
        with engine.connect() as conn:
            audited = conn.execute(sa.text(
                "SELECT count(*) FROM audit_entry WHERE action = 'chart.read' AND outcome = 'allowed'")).scalar()
        engine.dispose()
        assert audited >= served
