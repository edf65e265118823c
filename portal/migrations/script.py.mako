"""${message}"""
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}
# Columns and foreign keys: portal.migration_kit.columns; index and column steps: portal.migration_kit.steps.
# Once this revision ships, freeze what it sends: see tests/support/migration_ddl.py.

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
% if branch_labels:
branch_labels = ${repr(branch_labels)}
% endif
% if depends_on:
depends_on = ${repr(depends_on)}
% endif


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
