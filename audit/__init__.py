"""Tamper-evident audit log: events as the leaves of an RFC 9162 Merkle tree, signed C2SP tree
checkpoints, proofs, a witness, verification and exports.

Importable without Flask or the portal, so auditors can verify logs and exports on their
own machines with `python -m audit verify`.
"""
from audit.entries import (
    Entry,
    SigningKey,
    VerifyKey,
    canonical_json,
    generate_signing_key_pem,
    load_signing_key,
    load_verify_key,
)
from audit.errors import AuditWriteError, CannotVerify, MalformedEntryError, TreeError
from audit.events import OUTCOMES, AuditEvent, storable
from audit.export import (
    CSV_COLUMNS,
    ExportDigest,
    ExportManifest,
    csv_cell,
    csv_cell_value,
    export_csv,
    export_fhir_ndjson,
    export_jsonl,
    export_manifest,
    fhir_audit_event,
)
from audit.filters import AuditFilter
from audit.group_commit import GroupCommit
from audit.merkle import ProofError
from audit.queries import AuditQueries, Page
from audit.schema import (
    APPEND_ONLY_DDL,
    DROP_APPEND_ONLY_DDL,
    audit_entry,
    audit_tree_checkpoint,
    audit_tree_cosignature,
    audit_tree_node,
    create_tables,
    install_append_only_guard,
    metadata,
    remove_append_only_guard,
)
from audit.store import AuditStore, JsonlAuditStore, SqlAuditStore
from audit.tree_checkpoints import TreeCheckpoint, TreeCosignature
from audit.verify import KINDS, Problem, VerifyReport, verify, verify_file, verify_store

__all__ = [
    "APPEND_ONLY_DDL",
    "CSV_COLUMNS",
    "DROP_APPEND_ONLY_DDL",
    "KINDS",
    "OUTCOMES",
    "AuditEvent",
    "AuditFilter",
    "AuditQueries",
    "AuditStore",
    "AuditWriteError",
    "CannotVerify",
    "Entry",
    "ExportDigest",
    "ExportManifest",
    "GroupCommit",
    "JsonlAuditStore",
    "MalformedEntryError",
    "Page",
    "Problem",
    "ProofError",
    "SigningKey",
    "SqlAuditStore",
    "TreeCheckpoint",
    "TreeCosignature",
    "TreeError",
    "VerifyKey",
    "VerifyReport",
    "audit_entry",
    "audit_tree_checkpoint",
    "audit_tree_cosignature",
    "audit_tree_node",
    "canonical_json",
    "create_tables",
    "csv_cell",
    "csv_cell_value",
    "export_csv",
    "export_fhir_ndjson",
    "export_jsonl",
    "export_manifest",
    "fhir_audit_event",
    "generate_signing_key_pem",
    "install_append_only_guard",
    "load_signing_key",
    "load_verify_key",
    "metadata",
    "remove_append_only_guard",
    "storable",
    "verify",
    "verify_file",
    "verify_store",
]
