#!/bin/sh
# Writes the secret files compose.yaml mounts, into DIR (default ./secrets): database and Redis
# passwords with the URLs that carry them, the session secret, the field-encryption keyring, the audit
# signing key (and its public half, for verifying exports), the audit witness's cosigner key (and its
# verifier key, which the workers pin), and the metrics token.
#
#   deploy/compose/make-secrets.sh [DIR]
#
# An existing file is never overwritten: a new keyring or signing key would make every stored value
# unreadable and every checkpoint unverifiable. Two files are yours to provide, because they come from
# elsewhere: oidc_client_secret (your identity provider's client secret) and the TLS certificate and key
# (tls_certificate, tls_private_key) for the portal's public name.
#
# Permissions: Compose (without Swarm) mounts each file as it is on the host, and the containers read
# them as their own users (the portal as uid 10001, PostgreSQL as 999, Prometheus as 65534), so the
# files are 0644 inside a directory that only its owner may enter (0700).
set -eu

dir=${1:-secrets}
umask 077
mkdir -p "$dir"
chmod 700 "$dir"
umask 022

# write NAME: the file's content comes from standard input; an existing file is kept.
write() {
    if [ -e "$dir/$1" ]; then
        cat >/dev/null
        echo "kept    $dir/$1"
    else
        cat >"$dir/$1.tmp"
        chmod 644 "$dir/$1.tmp"
        mv "$dir/$1.tmp" "$dir/$1"
        echo "wrote   $dir/$1"
    fi
}

random_hex() { openssl rand -hex 32; }
# Read back what is stored, so a URL written later always carries the password PostgreSQL or Redis has.
stored() { cat "$dir/$1"; }

random_hex | write postgres_password
random_hex | write database_owner_password
random_hex | write database_app_password
echo "postgresql+psycopg2://portal_owner:$(stored database_owner_password)@db:5432/portal" | write database_url_owner
echo "postgresql+psycopg2://portal_app:$(stored database_app_password)@db:5432/portal" | write database_url_app

random_hex | write redis_password
echo "requirepass $(stored redis_password)" | write redis_conf
echo "redis://:$(stored redis_password)@redis:6379/0" | write message_queue_url
echo "redis://:$(stored redis_password)@redis:6379/1" | write ratelimit_storage_url

openssl rand -base64 48 | tr -d '\n' | write secret_key
random_hex | write metrics_token
# The keyring format of PORTAL_KEYRING (README, "Configuration"): one AES-256 key, one blind-index key.
printf '{"primary": "k1", "keys": {"k1": "%s"}, "index_primary": "i1", "index_keys": {"i1": "%s"}}\n' \
    "$(openssl rand -base64 32)" "$(openssl rand -base64 32)" | write keyring
openssl genpkey -algorithm ed25519 | write audit_signing_key
openssl pkey -in "$dir/audit_signing_key" -pubout | write audit_public_key.pem
# Signs the ID tokens of the apps patients connect (PORTAL_SMART_SIGNING_KEY): RSA, for RS256.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 | write smart_signing_key

# The audit witness's cosigner key in the form `python -m audit witness-keygen` writes (docs/WITNESS.md):
# PRIVATE+KEY+name+keyid+base64(0x04 || Ed25519 seed), key id = SHA-256(name || 0x0A || 0x04 || public key)[:4];
# and its verifier key name+keyid+base64(0x04 || public key), which the workers pin (PORTAL_AUDIT_WITNESS_KEY).
if [ ! -e "$dir/witness_key" ]; then
    name=${WITNESS_NAME:-riverside-portal/witness}
    work=$(mktemp -d)
    openssl genpkey -algorithm ed25519 -outform DER -out "$work/key.der"
    openssl pkey -inform DER -in "$work/key.der" -pubout -outform DER | tail -c 32 >"$work/public"
    tail -c 32 "$work/key.der" >"$work/seed"
    keyid=$({ printf '%s\n\004' "$name"; cat "$work/public"; } | openssl dgst -sha256 -binary | head -c 4 \
        | od -An -tx1 | tr -d ' \n')
    echo "PRIVATE+KEY+$name+$keyid+$({ printf '\004'; cat "$work/seed"; } | openssl base64 -A)" | write witness_key
    echo "$name+$keyid+$({ printf '\004'; cat "$work/public"; } | openssl base64 -A)" | write witness_verifier_key
    rm -rf "$work"
fi

for provided in oidc_client_secret tls_certificate tls_private_key; do
    [ -e "$dir/$provided" ] || echo "missing $dir/$provided: write it before docker compose up (see README, \"Run it with Compose\")"
done
echo "Keep copies of keyring and audit_public_key.pem apart from the database backups (deploy/README.md, \"Backup and restore\")."
