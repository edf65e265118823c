"""who linked a patient account to its chart: the sign-in claim or an administrator"""
from portal.migration_kit.columns import string
from portal.migration_kit.steps import add_columns, drop_columns

revision = '0003'
down_revision = '0002'


def upgrade() -> None:
    add_columns('user_account', string.optional('patient_link_source', 10))


def downgrade() -> None:
    drop_columns('user_account', 'patient_link_source')
