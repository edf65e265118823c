"""Run Alembic migrations programmatically (used by `flask init-db` and the test fixtures)."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from audit import SigningKey

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head", audit_signing_key: SigningKey | None = None,
            audit_log_origin: str | None = None) -> None:
    """Migrate to `revision`. The audit key and origin sign the tree checkpoints of a retired hash chain
    (revision 0007); without them that revision reads them from the environment's settings."""
    config = alembic_config(database_url)
    if audit_signing_key is not None:
        config.attributes.update(audit_signing_key=audit_signing_key, audit_log_origin=audit_log_origin)
    command.upgrade(config, revision)
