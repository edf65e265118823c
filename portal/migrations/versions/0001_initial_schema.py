"""initial schema"""
import sqlalchemy as sa
from alembic import op

from audit.schema import install_append_only_guard, remove_append_only_guard
from portal.migration_kit.columns import big_integer, cascade, identifier, set_null, string, text, timestamp
from portal.migration_kit.steps import create_indexes, drop_indexes

revision = '0001'
down_revision = None

# The audit tables this revision creates (audit.schema.AUDIT_TABLES grows in later revisions).
AUDIT_TABLES_0001 = ('audit_entry', 'audit_checkpoint')


def upgrade() -> None:
    op.create_table('care_team',
        identifier('id'),
        string('name', 120),
        timestamp('created_at'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'))
    op.create_table('patient',
        identifier('id'),
        text('mrn'),
        string.optional('mrn_bidx', 80),
        text('given_name'),
        text('family_name'),
        string.optional('family_name_bidx', 80),
        text('birth_date'),
        string.optional('birth_date_bidx', 80),
        text.optional('sex'),
        text.optional('phone'),
        text.optional('email'),
        text.optional('address'),
        timestamp('created_at'),
        sa.PrimaryKeyConstraint('id'))
    create_indexes('patient', 'birth_date_bidx', 'family_name_bidx', 'mrn_bidx')
    op.create_table('allergy',
        identifier('id'),
        identifier('patient_id'),
        text('substance'),
        text.optional('reaction'),
        text.optional('severity'),
        timestamp('recorded_at'),
        cascade('patient_id', 'patient.id'),
        sa.PrimaryKeyConstraint('id'))
    create_indexes('allergy', 'patient_id')
    op.create_table('care_team_patient',
        identifier('team_id'),
        identifier('patient_id'),
        cascade('patient_id', 'patient.id'),
        cascade('team_id', 'care_team.id'),
        sa.PrimaryKeyConstraint('team_id', 'patient_id'))
    create_indexes('care_team_patient', 'patient_id')
    op.create_table('condition',
        identifier('id'),
        identifier('patient_id'),
        text('text'),
        string('status', 20),
        text.optional('onset'),
        timestamp('recorded_at'),
        cascade('patient_id', 'patient.id'),
        sa.PrimaryKeyConstraint('id'))
    create_indexes('condition', 'patient_id')
    op.create_table('conversation',
        identifier('id'),
        string('kind', 10),
        identifier.optional('team_id'),
        identifier.optional('patient_id'),
        string.optional('direct_key', 80),
        big_integer('last_seq'),
        timestamp('created_at'),
        cascade('patient_id', 'patient.id'),
        cascade('team_id', 'care_team.id'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('direct_key'))
    create_indexes('conversation', 'patient_id', 'team_id')
    op.create_table('lab_result',
        identifier('id'),
        identifier('patient_id'),
        text('name'),
        text('value'),
        text.optional('unit'),
        text.optional('reference_range'),
        text.optional('flag'),
        timestamp('observed_at'),
        cascade('patient_id', 'patient.id'),
        sa.PrimaryKeyConstraint('id'))
    create_indexes('lab_result', 'observed_at', 'patient_id')
    op.create_table('medication',
        identifier('id'),
        identifier('patient_id'),
        text('text'),
        text.optional('dosage'),
        string('status', 20),
        timestamp('recorded_at'),
        cascade('patient_id', 'patient.id'),
        sa.PrimaryKeyConstraint('id'))
    create_indexes('medication', 'patient_id')
    op.create_table('user_account',
        identifier('id'),
        string('issuer', 255),
        string('subject', 255),
        text.optional('display_name'),
        text.optional('email'),
        string('roles', 100),
        identifier.optional('patient_id'),
        timestamp('created_at'),
        timestamp.optional('last_sign_in_at'),
        set_null('patient_id', 'patient.id'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('issuer', 'subject', name='uq_user_issuer_subject'))
    create_indexes('user_account', 'patient_id')
    op.create_table('break_glass',
        identifier('id'),
        identifier('user_id'),
        identifier('patient_id'),
        text('reason'),
        timestamp('started_at'),
        timestamp('expires_at'),
        timestamp.optional('reviewed_at'),
        identifier.optional('reviewed_by'),
        cascade('patient_id', 'patient.id'),
        set_null('reviewed_by', 'user_account.id'),
        cascade('user_id', 'user_account.id'),
        sa.PrimaryKeyConstraint('id'))
    create_indexes('break_glass', 'patient_id', 'user_id')
    op.create_table('care_team_member',
        identifier('team_id'),
        identifier('user_id'),
        cascade('team_id', 'care_team.id'),
        cascade('user_id', 'user_account.id'),
        sa.PrimaryKeyConstraint('team_id', 'user_id'))
    create_indexes('care_team_member', 'user_id')
    op.create_table('conversation_member',
        identifier('conversation_id'),
        identifier('user_id'),
        cascade('conversation_id', 'conversation.id'),
        cascade('user_id', 'user_account.id'),
        sa.PrimaryKeyConstraint('conversation_id', 'user_id'))
    create_indexes('conversation_member', 'user_id')
    op.create_table('conversation_read',
        identifier('conversation_id'),
        identifier('user_id'),
        big_integer('last_read_seq'),
        timestamp('updated_at'),
        cascade('conversation_id', 'conversation.id'),
        cascade('user_id', 'user_account.id'),
        sa.PrimaryKeyConstraint('conversation_id', 'user_id'))
    op.create_table('login_session',
        identifier('id'),
        string('token_hash', 64),
        identifier('user_id'),
        text.optional('id_token'),
        timestamp('created_at'),
        timestamp('last_seen_at'),
        timestamp.optional('ended_at'),
        string.optional('end_reason', 40),
        cascade('user_id', 'user_account.id'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'))
    create_indexes('login_session', 'user_id')
    op.create_table('message',
        identifier('id'),
        identifier('conversation_id'),
        big_integer('seq'),
        identifier('sender_id'),
        string('idempotency_key', 64),
        text('body'),
        timestamp('created_at'),
        cascade('conversation_id', 'conversation.id'),
        cascade('sender_id', 'user_account.id'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('conversation_id', 'seq', name='uq_message_conversation_seq'),
        sa.UniqueConstraint('sender_id', 'idempotency_key', name='uq_message_sender_idempotency'))
    create_indexes('message', 'conversation_id')
    op.create_table('visit_note',
        identifier('id'),
        identifier('patient_id'),
        identifier.optional('author_id'),
        text('title'),
        text('text'),
        string.optional('submission_id', 64),
        timestamp('created_at'),
        set_null('author_id', 'user_account.id'),
        cascade('patient_id', 'patient.id'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('author_id', 'submission_id', name='uq_visit_note_author_submission'))
    create_indexes('visit_note', 'patient_id')
    op.create_table('audit_checkpoint',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        big_integer('count'),
        string('head_hash', 64),
        timestamp('created'),
        string('key_id', 16),
        text('signature'),
        text.optional('public_key'),
        sa.PrimaryKeyConstraint('id'))
    op.create_table('audit_entry',
        sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
        timestamp('time'),
        text.optional('actor_id'),
        text.optional('actor_role'),
        text('action'),
        string('outcome', 16),
        text.optional('patient_id'),
        text.optional('resource_type'),
        text.optional('resource_id'),
        text.optional('reason'),
        text.optional('source_ip'),
        text.optional('user_agent'),
        text.optional('request_id'),
        text.optional('session_hash'),
        text('details'),
        string('prev_hash', 64),
        string('entry_hash', 64),
        sa.PrimaryKeyConstraint('seq'),
        sa.UniqueConstraint('entry_hash'))
    create_indexes('audit_entry', 'action', 'actor_id', 'outcome', 'patient_id', 'time')
    install_append_only_guard(op.get_bind(), AUDIT_TABLES_0001)


def downgrade() -> None:
    remove_append_only_guard(op.get_bind(), AUDIT_TABLES_0001)
    drop_indexes('audit_entry', 'time', 'patient_id', 'outcome', 'actor_id', 'action')
    op.drop_table('audit_entry')
    op.drop_table('audit_checkpoint')
    drop_indexes('visit_note', 'patient_id')
    op.drop_table('visit_note')
    drop_indexes('message', 'conversation_id')
    op.drop_table('message')
    drop_indexes('login_session', 'user_id')
    op.drop_table('login_session')
    op.drop_table('conversation_read')
    drop_indexes('conversation_member', 'user_id')
    op.drop_table('conversation_member')
    drop_indexes('care_team_member', 'user_id')
    op.drop_table('care_team_member')
    drop_indexes('break_glass', 'user_id', 'patient_id')
    op.drop_table('break_glass')
    drop_indexes('user_account', 'patient_id')
    op.drop_table('user_account')
    drop_indexes('medication', 'patient_id')
    op.drop_table('medication')
    drop_indexes('lab_result', 'patient_id', 'observed_at')
    op.drop_table('lab_result')
    drop_indexes('conversation', 'team_id', 'patient_id')
    op.drop_table('conversation')
    drop_indexes('condition', 'patient_id')
    op.drop_table('condition')
    drop_indexes('care_team_patient', 'patient_id')
    op.drop_table('care_team_patient')
    drop_indexes('allergy', 'patient_id')
    op.drop_table('allergy')
    drop_indexes('patient', 'mrn_bidx', 'family_name_bidx', 'birth_date_bidx')
    op.drop_table('patient')
    op.drop_table('care_team')
