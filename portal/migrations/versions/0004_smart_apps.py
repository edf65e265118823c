"""apps patients connect over SMART on FHIR (apps, grants, codes, tokens) and LOINC codes of lab results"""
import sqlalchemy as sa
from alembic import op

from portal.migration_kit.columns import boolean, cascade, identifier, integer, set_null, string, text, timestamp
from portal.migration_kit.steps import add_columns, create_indexes, drop_columns

revision = '0004'
down_revision = '0003'


def upgrade() -> None:
    op.create_table('smart_app',
        identifier('id'),
        string('client_id', 64),
        string('name', 120),
        boolean('public'),
        string.optional('secret_hash', 64),
        text('redirect_uris'),
        text('allowed_scopes'),
        timestamp('created_at'),
        identifier.optional('created_by'),
        set_null('created_by', 'user_account.id'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('client_id'))
    op.create_table('smart_grant',
        identifier('id'),
        identifier('app_id'),
        identifier('user_id'),
        identifier('patient_id'),
        text('scopes'),
        timestamp('created_at'),
        timestamp.optional('first_used_at'),
        timestamp.optional('last_used_at'),
        integer('read_count'),
        timestamp.optional('revoked_at'),
        string.optional('revoked_reason', 40),
        cascade('app_id', 'smart_app.id'),
        cascade('patient_id', 'patient.id'),
        cascade('user_id', 'user_account.id'),
        sa.PrimaryKeyConstraint('id'))
    create_indexes('smart_grant', 'app_id', 'patient_id', 'user_id')
    op.create_table('smart_authorization_code',
        string('code_hash', 64),
        identifier('app_id'),
        identifier('user_id'),
        identifier('patient_id'),
        text('redirect_uri'),
        text('scopes'),
        string.optional('nonce', 255),
        string('code_challenge', 128),
        string('code_challenge_method', 10),
        timestamp('auth_time'),
        timestamp('created_at'),
        timestamp('expires_at'),
        timestamp.optional('used_at'),
        identifier.optional('grant_id'),
        cascade('app_id', 'smart_app.id'),
        cascade('grant_id', 'smart_grant.id'),
        cascade('patient_id', 'patient.id'),
        cascade('user_id', 'user_account.id'),
        sa.PrimaryKeyConstraint('code_hash'))
    create_indexes('smart_authorization_code', 'app_id', 'patient_id')
    op.create_table('smart_token',
        identifier('id'),
        identifier('grant_id'),
        string('access_token_hash', 64),
        string.optional('refresh_token_hash', 64),
        text('scopes'),
        timestamp('issued_at'),
        timestamp('expires_at'),
        timestamp.optional('refresh_expires_at'),
        timestamp.optional('revoked_at'),
        string.optional('revoked_reason', 40),
        cascade('grant_id', 'smart_grant.id'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('access_token_hash'),
        sa.UniqueConstraint('refresh_token_hash'))
    create_indexes('smart_token', 'grant_id')
    add_columns('lab_result', text.optional('loinc_code'))


def downgrade() -> None:
    drop_columns('lab_result', 'loinc_code')
    op.drop_table('smart_token')
    op.drop_table('smart_authorization_code')
    op.drop_table('smart_grant')
    op.drop_table('smart_app')
