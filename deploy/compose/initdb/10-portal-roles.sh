#!/bin/sh
# Runs once, as the PostgreSQL superuser, when the database volume is first created
# (/docker-entrypoint-initdb.d in the postgres image). It creates the two roles deploy/README.md
# describes, "Database roles":
#   portal_owner  owns the database and so every table the migrations create: only the one-shot
#                 `migrate` service connects as this role.
#   portal_app    what the workers connect as. It owns nothing, so it cannot drop or disable the audit
#                 tables' append-only triggers, truncate, or alter the schema; it reads and writes rows.
# Passwords come from the files named by DATABASE_OWNER_PASSWORD_FILE and DATABASE_APP_PASSWORD_FILE
# (Compose secrets), read by psql itself so they never appear on a command line.
set -eu
: "${DATABASE_OWNER_PASSWORD_FILE:?}" "${DATABASE_APP_PASSWORD_FILE:?}" "${POSTGRES_DB:?}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "$POSTGRES_DB" \
     -v dbname="$POSTGRES_DB" <<'SQL'
\set owner_password `cat "$DATABASE_OWNER_PASSWORD_FILE"`
\set app_password `cat "$DATABASE_APP_PASSWORD_FILE"`
SET password_encryption = 'scram-sha-256';
CREATE ROLE portal_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE portal_app LOGIN PASSWORD :'app_password';
\unset owner_password
\unset app_password

-- The owner of the database owns its public schema (pg_database_owner), so it can create tables there.
ALTER DATABASE :"dbname" OWNER TO portal_owner;
REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"dbname" TO portal_app;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO portal_app;

-- Every table and sequence the owner creates, now and in later migrations, is usable by the workers.
-- UPDATE and DELETE on the audit tables (audit_entry, audit_tree_node, audit_tree_checkpoint,
-- audit_tree_cosignature) are refused by their triggers, which only the
-- owner (or a superuser) can drop or disable; TRUNCATE is never granted.
ALTER DEFAULT PRIVILEGES FOR ROLE portal_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO portal_app;
ALTER DEFAULT PRIVILEGES FOR ROLE portal_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO portal_app;
SQL
