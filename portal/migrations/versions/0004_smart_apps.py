"""apps patients connect over SMART on FHIR (apps, grants, codes, tokens) and LOINC codes of lab results

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 10:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('smart_app',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('public', sa.Boolean(), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=True),
    sa.Column('redirect_uris', sa.Text(), nullable=False),
    sa.Column('allowed_scopes', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=36), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['user_account.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('client_id')
    )
    op.create_table('smart_grant',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('app_id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('patient_id', sa.String(length=36), nullable=False),
    sa.Column('scopes', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('first_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('read_count', sa.Integer(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_reason', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['app_id'], ['smart_app.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('smart_grant', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_smart_grant_app_id'), ['app_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_smart_grant_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_smart_grant_user_id'), ['user_id'], unique=False)

    op.create_table('smart_authorization_code',
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('app_id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('patient_id', sa.String(length=36), nullable=False),
    sa.Column('redirect_uri', sa.Text(), nullable=False),
    sa.Column('scopes', sa.Text(), nullable=False),
    sa.Column('nonce', sa.String(length=255), nullable=True),
    sa.Column('code_challenge', sa.String(length=128), nullable=False),
    sa.Column('code_challenge_method', sa.String(length=10), nullable=False),
    sa.Column('auth_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('grant_id', sa.String(length=36), nullable=True),
    sa.ForeignKeyConstraint(['app_id'], ['smart_app.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['grant_id'], ['smart_grant.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('code_hash')
    )
    with op.batch_alter_table('smart_authorization_code', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_smart_authorization_code_app_id'), ['app_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_smart_authorization_code_patient_id'), ['patient_id'], unique=False)

    op.create_table('smart_token',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('grant_id', sa.String(length=36), nullable=False),
    sa.Column('access_token_hash', sa.String(length=64), nullable=False),
    sa.Column('refresh_token_hash', sa.String(length=64), nullable=True),
    sa.Column('scopes', sa.Text(), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('refresh_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_reason', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['grant_id'], ['smart_grant.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('access_token_hash'),
    sa.UniqueConstraint('refresh_token_hash')
    )
    with op.batch_alter_table('smart_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_smart_token_grant_id'), ['grant_id'], unique=False)

    with op.batch_alter_table('lab_result', schema=None) as batch_op:
        batch_op.add_column(sa.Column('loinc_code', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('lab_result', schema=None) as batch_op:
        batch_op.drop_column('loinc_code')
    op.drop_table('smart_token')
    op.drop_table('smart_authorization_code')
    op.drop_table('smart_grant')
    op.drop_table('smart_app')
