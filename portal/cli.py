"""Administrator commands: `flask --app portal <command>`."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import Flask
from tqdm import tqdm

from portal import services
from portal.access import record
from portal.actions import Action
from portal.compliance.exports import export_to_file
from portal.compliance.filters import parse_filter
from portal.compliance.integrity import run_verification
from portal.crypto import active_keyring, rotate, rotation_status
from portal.db import db_session
from portal.exceptions import FilterError, InvalidInput
from portal.fhir.service import register_app
from portal.migrate import upgrade
from portal.seed import seed_demo as run_seed
from portal.witnessing import submitter as witness_submitter


def init_app(app: Flask) -> None:
    for command in (init_db, seed_demo, new_key, rotate_keys, audit_verify, audit_export, smart_register_app,
                    audit_witness, audit_log_key):
        app.cli.add_command(command)


@click.command("init-db")
def init_db() -> None:
    """Migrate the database to the newest schema (Alembic upgrade head)."""
    settings = services.settings()
    upgrade(settings.database_url, audit_signing_key=services.audit_signing_key(),
            audit_log_origin=settings.audit_log_origin)
    click.echo("database migrated to head")


@click.command("seed-demo")
@click.option("--patients", default=240, show_default=True, help="Size of the synthetic population.")
def seed_demo(patients: int) -> None:
    """Create the demo users, care teams and a synthetic population (idempotent)."""
    counts = run_seed(services.settings().oidc_issuer, population=patients)
    click.echo("demo data ready: " + ", ".join(f"{value} {name}" for name, value in counts.items()))


@click.command("new-key")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
def new_key(output: Path) -> None:
    """Write the current keyring plus a new primary key and index key to OUTPUT (step 1 of a rotation)."""
    if output.exists():
        raise click.ClickException(f"{output} exists; choose a new file so the current keyring stays intact")
    output.touch(mode=0o600)
    output.write_text(active_keyring().rotated().to_json())
    click.echo(f"wrote {output}: point PORTAL_KEYRING at it on every worker, restart them, then run rotate-keys")


@click.command("rotate-keys")
@click.option("--check", is_flag=True, help="Only report how many values each key still protects.")
@click.option("--batch-size", default=500, show_default=True)
def rotate_keys(check: bool, batch_size: int) -> None:
    """Re-encrypt every value under the primary key and rebuild blind indexes (online, resumable).

    Add a new key to PORTAL_KEYRING and make it primary first; afterwards `--check` shows when an old
    key protects nothing any more and can be removed.
    """
    if not check:
        with tqdm(desc="rotating", unit="row", file=sys.stderr) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            summary = rotate(db_session.session_factory, batch_size=batch_size, progress=progress)
        record(Action.KEYS_ROTATED, "allowed", actor_role="operator", reason="rotate-keys command",
               details=summary.audit_details())
        click.echo(f"re-encrypted {summary.reencrypted} values and rebuilt {summary.reindexed} index entries "
                   f"in {summary.rows} rows ({summary.skipped} already rewritten by the application)")
    _print_status(rotation_status(db_session()))


def _print_status(status: dict) -> None:
    for title, counts in (("encryption keys", status["keys"]), ("blind-index keys", status["index_keys"])):
        click.echo(f"{title}:")
        for key_id, count in sorted(counts.items()):
            click.echo(f"  {key_id}: {count} values")


@click.command("audit-verify")
@click.option("--full", is_flag=True, help="Re-derive everything from the first entry, not only what is new.")
def audit_verify(full: bool) -> None:
    """Verify what the audit log gained since the last verified checkpoint (the signatures of the checkpoints
    signed since, the consistency proof from it to the newest, the new entries' hashes and tree nodes); with
    --full, or when there is no trusted record of one, the whole log re-derived into its Merkle tree
    and every signed tree checkpoint (one is required at every multiple of PORTAL_AUDIT_CHECKPOINT_EVERY).
    Then, with PORTAL_AUDIT_WITNESS_URL, that the log still holds the tree its witness last cosigned. Exit 1 on
    any problem, 2 when the witness cannot be asked."""
    report = run_verification(actor_role="operator", progress=True, full=full)
    click.echo(report.summary())
    sys.exit(1 if not report.ok else 2 if report.witness_error else 0)


@click.command("audit-witness")
def audit_witness() -> None:
    """One witnessing round: sign a tree checkpoint if entries are not covered by one, submit the newest to
    PORTAL_AUDIT_WITNESS_URL and keep its cosignature. Exit 1 if the witness remembers more than the log
    holds (a lost tail) or refuses the checkpoint, 2 if it cannot be reached or is not configured."""
    submitter = witness_submitter()
    if submitter is None:
        click.echo("error: no witness configured (PORTAL_AUDIT_WITNESS_URL, PORTAL_AUDIT_WITNESS_KEY)", err=True)
        sys.exit(2)
    outcome = submitter.submit(sign_now=True)
    if outcome.ok:
        click.echo(f"witnessed: the witness has cosigned {outcome.cosigned or 0} entries")
        return
    click.echo(f"error: {outcome.error}", err=True)
    sys.exit(1 if outcome.truncated or outcome.refused else 2)


@click.command("audit-log-key")
def audit_log_key() -> None:
    """Print the log's note verifier key (name+keyid+base64): what a witness is started with (--log-key)."""
    click.echo(services.audit_store().tree_signer().vkey())


@click.command("audit-export")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "fhir"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, path_type=Path), required=True)
@click.option("--since", help="ISO-8601 time, inclusive")
@click.option("--until", help="ISO-8601 time, exclusive")
@click.option("--actor")
@click.option("--patient")
@click.option("--action")
@click.option("--outcome", type=click.Choice(["allowed", "denied", "error"]))
def audit_export(fmt: str, output: Path, **filters) -> None:
    """Export the (filtered) audit log with what `python -m audit verify` needs to check it."""
    try:
        audit_filter = parse_filter(filters)
    except FilterError as exc:
        raise click.BadParameter(str(exc)) from None
    written = export_to_file(audit_filter, fmt, output, actor_role="operator")
    click.echo(f"exported {written} events to {output}")


@click.command("smart-register-app")
@click.option("--name", required=True, help="The app's name, as patients see it on the consent page.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, required=True, help="Matched exactly; repeat for several.")
@click.option("--public", is_flag=True, help="A public client (phone or browser app): PKCE only, no secret.")
@click.option("--scopes", default="launch/patient openid fhirUser offline_access patient/*.rs", show_default=True,
              help="The SMART scopes the app may ask for.")
def smart_register_app(name: str, redirect_uris: tuple[str, ...], public: bool, scopes: str) -> None:
    """Register an app patients may connect; a confidential app's secret is printed once and never stored."""
    try:
        registration = register_app(name, redirect_uris, public, scopes)
    except InvalidInput as exc:
        raise click.BadParameter(exc.message) from None
    app = registration.app
    record(Action.ADMIN_APP_REGISTERED, "allowed", actor_role="operator", reason="smart-register-app command",
           resource_type="smart_app", resource_id=app.id, details={"client_id": app.client_id, "app": app.name,
                                                                     "public": app.public})
    click.echo(f"client_id: {app.client_id}")
    if registration.client_secret:
        click.echo(f"client_secret: {registration.client_secret}")
        click.echo("Copy the secret now: it is shown only this once (the portal keeps only its hash).", err=True)
