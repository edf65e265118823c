"""Command line for auditors and operators: `python -m audit verify|export|keygen|witness|witness-keygen|log-key`,
the Merkle tree's `prove-inclusion|prove-consistency` (from the database) and
`check-inclusion|check-consistency` (offline), and `verify-report` (a report with its proofs, offline).

Exit status: 0 when everything verified (or the export/key/proof was written), 1 when tampering
was found, 2 for usage, I/O or database errors and for a file it cannot check (a format it
does not know, a CSV or FHIR NDJSON export without its manifest).

Proofs are printed as JSON in RFC 9162 form (§4.12, §4.13 field names: tree_size, leaf_index,
inclusion_path; tree_size_1, tree_size_2, consistency_path) with every hash in standard base64,
as Certificate Transparency's JSON API and C2SP checkpoints write them.

Long because it is the one command line of the package: each command is a short function over the
modules that do the work, and their options and exit statuses are documented together here.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import importlib.metadata
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from tqdm import tqdm

from audit import merkle
from audit.entries import SigningKey, VerifyKey, canonical_json, load_signing_key, load_verify_key
from audit.errors import TreeError
from audit.export import ExportDigest, export_csv, export_fhir_ndjson, export_jsonl, export_manifest
from audit.filters import AuditFilter
from audit.note import ALG_ED25519, Checkpoint, Note, NoteError, Verifier
from audit.proofs import (
    TrustedHead,
    check_consistency,
    check_inclusion,
    decode_hash,
    load_document,
    parse_tree_head,
    prove_consistency,
    prove_inclusion,
)
from audit.report import check_report
from audit.store import DEFAULT_CHECKPOINT_EVERY, SqlAuditStore
from audit.tree_checkpoints import TreeCheckpoint
from audit.tree_verify import TreeHead, verify_tree
from audit.verify import VerifyReport, verify_file, verify_store
from audit.witness import WitnessStateError, run, write_witness_key
from audit.witness_client import WitnessError
from audit.witnessed import Witnessed, check_against_witness, fetch_witnessed

EXIT_OK, EXIT_TAMPERED, EXIT_USAGE = 0, 1, 2
EXIT_STATUS_HELP = "exit status: 0 verified or written, 1 tampering found, 2 unusable input, I/O or database error"


def _cli_time(text: str) -> datetime:
    """ISO-8601 date or time; without an offset it is taken as UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a whole number of at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be a whole number of at least 0")
    return value


VERIFY_OPTIONS: dict[str, dict[str, Any]] = {
    "--witness-url": {"metavar": "URL", "help": "with --db: also fetch this witness's latest cosigned checkpoint of "
                      "the log and require the database to hold that tree (detects a deleted tail or emptied tables)"},
    "--witness-key": {"metavar": "VKEY", "help": "the witness's verifier key (name+keyid+base64)"},
    "--log-key": {"metavar": "VKEY", "help": "the log's note verifier key (Integrity page, `flask audit-log-key`), "
                  "which also checks the tree checkpoints without --public-key; default: --public-key under the origin "
                  "of the database's newest tree checkpoint"},
    "--since-size": {"metavar": "N", "type": _positive_int, "help": "with --db and --since-root: verify the Merkle "
                     "tree incrementally from this trusted tree head (a verified checkpoint's size and base64 root): "
                     "only entries after N are hashed"},
    "--since-root": {"metavar": "BASE64", "help": "the trusted root of the tree of --since-size entries"},
    "--manifest": {"metavar": "FILE", "help": "signed manifest of a CSV or FHIR NDJSON export (default: "
                   "FILE.manifest.json beside it; the JSON from the console, or the value of its X-Audit-Manifest "
                   "header)"},
}


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser(
        "verify", help="verify a database, a JSON Lines store file, or an export (JSON Lines, CSV or FHIR NDJSON)")
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?",
                        help="JSON Lines store file or export, or a CSV or FHIR NDJSON export with its manifest")
    source.add_argument("--db", metavar="URL", help="SQLAlchemy URL of the portal database")
    check.add_argument("--public-key", metavar="PEM_FILE", help="trusted public key (PEM file or raw base64)")
    check.add_argument("--checkpoint-every", metavar="N", type=_positive_int, default=DEFAULT_CHECKPOINT_EVERY,
                       help="the portal's PORTAL_AUDIT_CHECKPOINT_EVERY: a signed tree checkpoint must exist at every "
                            "multiple of N in a database, a store file or a full JSON Lines export "
                            f"(default: {DEFAULT_CHECKPOINT_EVERY})")
    for flag, options in VERIFY_OPTIONS.items():
        check.add_argument(flag, **options)

    export = commands.add_parser("export", help="export (part of) the database audit log")
    export.add_argument("--db", metavar="URL", required=True)
    export.add_argument("--format", choices=("csv", "jsonl", "fhir"), required=True)
    export.add_argument("--since", type=_cli_time, metavar="ISO")
    export.add_argument("--until", type=_cli_time, metavar="ISO")
    export.add_argument("--actor", metavar="ID")
    export.add_argument("--patient", metavar="ID")
    export.add_argument("--action", metavar="A")
    export.add_argument("--outcome", choices=("allowed", "denied", "error"))
    export.add_argument("--signing-key", metavar="KEY", required=True, help="PEM file, PEM text or raw base64")
    export.add_argument("-o", "--output", metavar="FILE", required=True)

    keygen = commands.add_parser("keygen", help="write a new Ed25519 signing key (PEM) and its public key")
    keygen.add_argument("-o", "--output", metavar="FILE", required=True, help="private key; FILE.pub gets the public key")

    witness = commands.add_parser("witness", help="run a C2SP tlog-witness (POST /add-checkpoint) for the audit log")
    witness.add_argument("--key", metavar="FILE", required=True, help="cosigner key written by witness-keygen")
    witness.add_argument("--state", metavar="FILE", required=True,
                         help="the witness's own state file (created if missing; never the portal's database)")
    witness.add_argument("--log-key", metavar="VKEY", action="append", required=True,
                         help="verifier key of a log it witnesses, name+keyid+base64 (the name is the log's "
                              "origin); repeat for more logs or keys")
    witness.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    witness.add_argument("--port", type=int, required=True, help="port to listen on (0: any free port)")

    log_key = commands.add_parser("log-key", help="print the log's note verifier key (name+keyid+base64), what a "
                                                  "witness is started with, from its public key and origin")
    log_key.add_argument("--public-key", metavar="PEM_FILE", required=True, help="the audit public key (PEM or base64)")
    log_key.add_argument("--origin", required=True, help="the portal's PORTAL_AUDIT_LOG_ORIGIN")

    witness_keygen = commands.add_parser("witness-keygen",
                                         help="write a new witness cosigner key and print its verifier key")
    witness_keygen.add_argument("--name", required=True, help="the witness's key name, e.g. witness.example/w1")
    witness_keygen.add_argument("--out", metavar="FILE", required=True, help="key file to create (owner-only)")
    inclusion = commands.add_parser("prove-inclusion", help="RFC 9162 inclusion proof of one entry (JSON, base64 hashes)")
    inclusion.add_argument("--db", metavar="URL", required=True)
    inclusion.add_argument("--index", metavar="I", type=_non_negative_int, required=True,
                           help="leaf index: the entry with seq I + 1")
    inclusion.add_argument("--size", metavar="N", type=_positive_int, help="tree size (default: the whole log)")

    consistency = commands.add_parser("prove-consistency",
                                      help="RFC 9162 consistency proof between two tree sizes (JSON, base64 hashes)")
    consistency.add_argument("--db", metavar="URL", required=True)
    consistency.add_argument("--old", metavar="M", type=_positive_int, required=True)
    consistency.add_argument("--new", metavar="N", type=_positive_int, help="default: the whole log")

    check_inc = commands.add_parser("check-inclusion", help="check a prove-inclusion JSON file offline (no database)")
    check_inc.add_argument("file", help="the JSON prove-inclusion printed")
    check_inc.add_argument("--tree", metavar="SIZE:BASE64", help="the trusted tree head (a verified checkpoint's size "
                                                                 "and root) the proof must be against")
    check_con = commands.add_parser("check-consistency", help="check a prove-consistency JSON file offline (no database)")
    check_con.add_argument("file", help="the JSON prove-consistency printed")
    check_con.add_argument("--old", metavar="SIZE:BASE64", help="the trusted old tree head")
    check_con.add_argument("--new", metavar="SIZE:BASE64", help="the trusted new tree head")

    report = commands.add_parser("verify-report", help="check a report that carries its proofs (the accounting of "
                                                       "disclosures as JSON) offline, with the public keys alone")
    report.add_argument("file", help="the report's JSON (its proof file, or the API's answer)")
    report.add_argument("--log-key", metavar="VKEY", help="the log's note verifier key to pin (the Integrity page, "
                                                          "`flask audit-log-key`); default: the key the report names")
    report.add_argument("--witness-key", metavar="VKEY", action="append", default=[],
                        help="a witness verifier key whose cosignature is required (repeatable); default: the "
                             "witnesses the report names")
    report.add_argument("--csv", metavar="FILE",
                        help="the report's CSV download, to check against its digest and, row by row, its lines")
    for command in commands.choices.values():
        command.epilog = EXIT_STATUS_HELP
    return parser


def _progress_bar(total: int | None) -> tqdm:
    """Shown on stderr only for runs that take more than a second, and only on a terminal."""
    return tqdm(total=total, unit="entries", file=sys.stderr, delay=1.0, disable=None, leave=False)


def _trusted_head(args: argparse.Namespace) -> TreeHead | None:
    if args.since_size is None and args.since_root is None:
        return None
    if args.since_size is None or args.since_root is None or not args.db:
        raise ValueError("--since-size and --since-root go together, with --db")
    return TreeHead(args.since_size, decode_hash(args.since_root, "--since-root"))


def _verify_key(args: argparse.Namespace) -> VerifyKey | None:
    """--public-key, else the Ed25519 key inside --log-key (the same key under the log's name)."""
    if args.public_key:
        return load_verify_key(args.public_key)
    if args.log_key:
        return VerifyKey.from_raw_b64(base64.b64encode(Verifier.from_vkey(args.log_key).public_key).decode("ascii"))
    return None


def _verify(args: argparse.Namespace) -> int:
    key = _verify_key(args)
    trusted = _trusted_head(args)
    if trusted is not None:
        store = SqlAuditStore(sa.create_engine(args.db), None)
        tree_report = verify_tree(store, trusted)
        print(tree_report.summary())
        return EXIT_OK if tree_report.ok else EXIT_TAMPERED
    if args.db:
        if args.manifest:
            raise ValueError("--manifest is for a CSV or FHIR NDJSON export file, not for --db")
        store = SqlAuditStore(sa.create_engine(args.db), None, checkpoint_every=args.checkpoint_every)
        witnessed = _witnessed(args, store, key) if args.witness_url else None
        if key is None:
            raise ValueError("verifying a database needs the log's key to check its signed tree checkpoints: "
                             "--public-key or --log-key")
        with _progress_bar(store.count()) as bar:
            sizes = (witnessed.checkpoint.size,) if witnessed is not None else ()
            report = verify_store(store, key, bar.update, roots_at=sizes)
        if witnessed is not None:
            problem = check_against_witness(store, witnessed.checkpoint, report.roots.get(witnessed.checkpoint.size)
                                            if report.ok else None)
            if problem is not None:
                report = dataclasses.replace(report, ok=False, problem=problem)
            elif report.ok:
                print(f"witness: the log holds the {witnessed.checkpoint.size} entries it cosigned")
        elif args.witness_url:
            print("witness: it has cosigned no checkpoint of this log yet")
    else:
        if args.witness_url:
            raise ValueError("--witness-url checks a database (--db), not a file")
        with _progress_bar(None) as bar:
            report = verify_file(args.file, key, bar.update, checkpoint_every=args.checkpoint_every,
                                 manifest=args.manifest)
    _warn_self_asserted(report)
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_TAMPERED


def _witnessed(args: argparse.Namespace, store: SqlAuditStore, key: VerifyKey | None) -> Witnessed | None:
    """The witness's latest cosigned checkpoint, both signatures checked; fetched before the database is read."""
    if not args.witness_key:
        raise ValueError("--witness-url needs --witness-key (the witness's verifier key)")
    if args.log_key:
        log_key = Verifier.from_vkey(args.log_key)
    else:
        newest = store.latest_tree_checkpoint()
        if key is None or newest is None:
            raise ValueError("--witness-url needs --log-key (or --public-key and a tree checkpoint in the database "
                             "naming the log's origin)")
        log_key = Verifier(Checkpoint.parse(Note.parse(newest.note).text).origin, ALG_ED25519, key.raw)
    try:
        return fetch_witnessed(args.witness_url, log_key, Verifier.from_vkey(args.witness_key))
    except WitnessError as exc:
        raise ValueError(f"cannot check against the witness: {exc}") from None


def _warn_self_asserted(report: VerifyReport) -> None:
    if report.self_asserted_key and report.key_id:
        print(
            f"warning: signatures checked with key {report.key_id} embedded in the log itself (self-asserted); "
            "pass --public-key to check against the portal's real key",
            file=sys.stderr,
        )


def _export(args: argparse.Namespace) -> int:
    """Export the entries the newest signed tree checkpoint covers; its manifest names that checkpoint."""
    signing_key = load_signing_key(args.signing_key)
    store = SqlAuditStore(sa.create_engine(args.db), None)
    checkpoints = store.tree_checkpoints()
    newest = checkpoints[-1] if checkpoints else None
    audit_filter = AuditFilter(args.since, args.until, args.actor, args.patient, args.action, args.outcome,
                               through=newest.tree_size if newest else 0)
    entries = store.iter_entries(filter=audit_filter)
    digest = ExportDigest()
    if args.format == "jsonl":
        chunks = export_jsonl(entries, signing_key, filter=audit_filter, checkpoints=checkpoints,
                              contiguous=audit_filter.is_empty, checkpoint=newest)
    elif args.format == "csv":
        chunks = export_csv(entries, digest)
    else:
        chunks = export_fhir_ndjson(entries, digest)
    with open(args.output, "w", encoding="utf-8", newline="") as handle:
        handle.writelines(chunks)
    if args.format != "jsonl":
        _write_manifest(args, digest, signing_key, audit_filter, newest)
    print(f"exported to {args.output}")
    return EXIT_OK


def _write_manifest(args: argparse.Namespace, digest: ExportDigest, key: SigningKey, audit_filter: AuditFilter,
                    checkpoint: TreeCheckpoint | None) -> None:
    manifest = export_manifest(args.format, digest, key, filter=audit_filter, contiguous=audit_filter.is_empty,
                               checkpoint=checkpoint)
    with open(f"{args.output}.manifest.json", "w", encoding="utf-8") as handle:
        json.dump(manifest.to_dict(), handle, indent=2, sort_keys=True)
        handle.write("\n")
    print(f"{manifest.count} entries; signed manifest in {args.output}.manifest.json")


def _keygen(args: argparse.Namespace) -> int:
    key = SigningKey.generate()
    with open(args.output, "xb") as handle:
        handle.write(key.private_pem())
    with open(f"{args.output}.pub", "xb") as handle:
        handle.write(key.public_pem())
    print(canonical_json({"key_id": key.key_id, "public_key": key.public_raw_b64()}).decode())
    return EXIT_OK


def _witness(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(args.key, args.state, args.log_key, args.host, args.port)
    return EXIT_OK


def _log_key(args: argparse.Namespace) -> int:
    print(Verifier(args.origin, ALG_ED25519, load_verify_key(args.public_key).raw).vkey())
    return EXIT_OK


def _witness_keygen(args: argparse.Namespace) -> int:
    print(write_witness_key(args.name, args.out).vkey())
    return EXIT_OK


def _print_json(value: dict) -> int:
    print(json.dumps(value, indent=2, ensure_ascii=False))
    return EXIT_OK


def _prove_inclusion(args: argparse.Namespace) -> int:
    return _print_json(prove_inclusion(SqlAuditStore(sa.create_engine(args.db), None), args.index, args.size))


def _prove_consistency(args: argparse.Namespace) -> int:
    return _print_json(prove_consistency(SqlAuditStore(sa.create_engine(args.db), None), args.old, args.new))


def _pinned(text: str | None, what: str) -> TrustedHead | None:
    return None if text is None else parse_tree_head(text, what)


def _checked(args: argparse.Namespace, check: Callable[[dict], str], pins: Sequence[TrustedHead | None]) -> int:
    with open(args.file, encoding="utf-8") as handle:
        document = load_document(handle.read())
    print(f"OK: {check(document)}")
    if not all(pin is not None for pin in pins):
        print("warning: a tree head was taken from the proof file itself (the log's own claim); pin the size and "
              "root of a verified checkpoint to make this a proof", file=sys.stderr)
    return EXIT_OK


def _check_inclusion(args: argparse.Namespace) -> int:
    tree = _pinned(args.tree, "--tree")
    return _checked(args, lambda document: check_inclusion(document, tree), [tree])


def _verify_report(args: argparse.Namespace) -> int:
    with open(args.file, encoding="utf-8") as handle:
        document = load_document(handle.read())
    csv = None
    if args.csv is not None:
        with open(args.csv, "rb") as handle:
            csv = handle.read()
    checked = check_report(document, args.log_key, args.witness_key, csv)
    print(checked.summary())
    if args.log_key is None or not args.witness_key:
        print("warning: keys were taken from the report itself; pin the log's key (--log-key) and the witness's "
              "(--witness-key), published by the clinic, to make this a proof", file=sys.stderr)
    return EXIT_OK


def _check_consistency(args: argparse.Namespace) -> int:
    old, new = _pinned(args.old, "--old"), _pinned(args.new, "--new")
    return _checked(args, lambda document: check_consistency(document, old, new), [old, new])


COMMANDS = {"verify": _verify, "export": _export, "keygen": _keygen, "prove-inclusion": _prove_inclusion,
            "prove-consistency": _prove_consistency, "check-inclusion": _check_inclusion,
            "check-consistency": _check_consistency, "witness": _witness, "witness-keygen": _witness_keygen,
            "log-key": _log_key, "verify-report": _verify_report}


def main(argv: Sequence[str] | None = None, prog: str = "python -m audit") -> int:
    args = _parser(prog).parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (TreeError, merkle.ProofError) as exc:
        print(f"tampered: {exc}", file=sys.stderr)
        return EXIT_TAMPERED
    except (OSError, ValueError, NoteError, WitnessStateError, sa.exc.SQLAlchemyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as exc:  # a database URL whose driver is not installed (postgresql:// wants psycopg)
        print(f"error: no driver for that database URL ({exc}); for PostgreSQL write postgresql+psycopg2://...",
              file=sys.stderr)
        return EXIT_USAGE


def console_main() -> None:
    """The ``portal-audit`` console script."""
    sys.exit(main(prog="portal-audit"))


def _version() -> str:
    try:
        return importlib.metadata.version("patient-portal")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


if __name__ == "__main__":
    console_main()
