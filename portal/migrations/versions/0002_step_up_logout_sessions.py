"""step-up, back-channel logout and session list"""
import sqlalchemy as sa
from alembic import op

from portal.migration_kit.columns import cascade, identifier, string, text, timestamp
from portal.migration_kit.steps import add_columns, create_indexes, drop_columns, drop_indexes

revision = '0002'
down_revision = '0001'


def upgrade() -> None:
    op.create_table('seen_logout_token',
        string('digest', 64),
        timestamp('seen_at'),
        timestamp('expires_at'),
        sa.PrimaryKeyConstraint('digest'))
    create_indexes('seen_logout_token', 'expires_at')
    op.create_table('socket_connection',
        string('sid', 64),
        identifier('login_session_id'),
        string('namespace', 40),
        timestamp('connected_at'),
        cascade('login_session_id', 'login_session.id'),
        sa.PrimaryKeyConstraint('sid'))
    create_indexes('socket_connection', 'login_session_id')
    add_columns('user_account', timestamp.optional('sessions_not_before'))
    add_columns('login_session',
        string.optional('provider_sid', 255),
        text.optional('source_ip'),
        text.optional('user_agent'),
        string.optional('step_up_action', 40),
        timestamp.optional('step_up_auth_time'),
        string.optional('step_up_acr', 255),
        timestamp.optional('step_up_expires_at'),
        text.optional('step_up_pending'))
    create_indexes('login_session', 'provider_sid')


def downgrade() -> None:
    drop_columns('user_account', 'sessions_not_before')
    drop_columns('login_session',
        'step_up_pending',
        'step_up_expires_at',
        'step_up_acr',
        'step_up_auth_time',
        'step_up_action',
        'user_agent',
        'source_ip',
        'provider_sid',
        indexes=('provider_sid',))
    drop_indexes('socket_connection', 'login_session_id')
    op.drop_table('socket_connection')
    drop_indexes('seen_logout_token', 'expires_at')
    op.drop_table('seen_logout_token')
