"""`python -m audit` as an auditor runs it: exit 0 when intact, 1 on tampering, 2 on usage/IO errors."""
from __future__ import annotations

import base64
import csv
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit import CSV_COLUMNS, AuditEvent, Entry, SigningKey, SqlAuditStore, create_tables
from audit.merkle import verify_inclusion
from tests.support.environment import ROOT

pytestmark = pytest.mark.slow  # started first (tests/conftest.py): one of the suite's longest modules



def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def key_files(tmp_path) -> tuple[Path, Path]:
    key = SigningKey.generate()
    private, public = tmp_path / "audit.pem", tmp_path / "audit.pub.pem"
    private.write_bytes(key.private_pem())
    public.write_bytes(key.public_pem())
    return private, public


def _fill(url: str, key_files: tuple[Path, Path]) -> str:
    engine = sa.create_engine(url)
    create_tables(engine)
    store = SqlAuditStore(engine, SigningKey.from_pem(key_files[0].read_bytes()), checkpoint_every=40)
    store.append_many(AuditEvent(action="chart.read", outcome="denied" if i % 3 == 0 else "allowed",
                                 actor_id=f"u{i % 2}", patient_id="p1") for i in range(120))
    engine.dispose()
    return url


@pytest.fixture
def db_with_log(database_url, key_files) -> str:
    """A 120-entry log on SQLite and on PostgreSQL."""
    return _fill(database_url, key_files)


@pytest.fixture
def sqlite_with_log(sqlite_url, key_files) -> str:
    """Exports are backend-independent: one backend keeps the subprocess-heavy tests quick."""
    return _fill(sqlite_url, key_files)


def test_verify_database(db_with_log, key_files):
    result = _cli("verify", "--db", db_with_log, "--public-key", str(key_files[1]), "--checkpoint-every", "40")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: log intact (120 entries, 3 signatures; Merkle tree of 120 entries, root ")
    other = SigningKey.generate().public_raw_b64()
    assert _cli("verify", "--db", db_with_log, "--public-key", other, "--checkpoint-every", "40").returncode == 1


def test_verify_database_needs_the_portals_checkpoint_interval(db_with_log, key_files):
    """The log was written with a checkpoint every 40 entries; told 100 (the default), the verifier misses one."""
    result = _cli("verify", "--db", db_with_log, "--public-key", str(key_files[1]))
    assert result.returncode == 1
    assert result.stdout.startswith("FAILED: checkpoint_missing at position 100: checkpoint missing at seq 100")
    assert "--checkpoint-every N" in _cli("verify", "--help").stdout and "default: 100" in _cli("verify", "--help").stdout


def test_jsonl_export_verifies_and_an_edit_fails(sqlite_with_log, key_files, tmp_path):
    out = tmp_path / "export.jsonl"
    exported = _cli("export", "--db", sqlite_with_log, "--format", "jsonl", "--signing-key", str(key_files[0]),
                    "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    verified = _cli("verify", str(out), "--public-key", str(key_files[1]), "--checkpoint-every", "40")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    self_asserted = _cli("verify", str(out), "--checkpoint-every", "40")
    assert self_asserted.returncode == 0 and "self-asserted" in self_asserted.stderr

    lines = out.read_text().splitlines(keepends=True)
    lines[10] = lines[10].replace('"outcome":"denied"', '"outcome":"allowed"').replace(
        '"actor_id":"u', '"actor_id":"x')
    out.write_text("".join(lines))
    tampered = _cli("verify", str(out), "--public-key", str(key_files[1]), "--checkpoint-every", "40")
    assert tampered.returncode == 1
    assert tampered.stdout.startswith("FAILED: edited at position 11")


def test_a_jsonl_export_is_rebuilt_into_the_tree_its_signed_checkpoints_and_manifest_name(sqlite_with_log, key_files,
                                                                                          tmp_path):
    """An entry rewritten with its leaf hash recomputed agrees with itself; the tree rebuilt from the export no
    longer has the root the next signed checkpoint states."""
    out = tmp_path / "export.jsonl"
    assert _cli("export", "--db", sqlite_with_log, "--format", "jsonl", "--signing-key", str(key_files[0]),
                "-o", str(out)).returncode == 0
    lines = out.read_text().splitlines(keepends=True)
    engine = sa.create_engine(sqlite_with_log)
    store = SqlAuditStore(engine, None)
    manifest = json.loads(lines[-1])
    assert (manifest["tree_size"], manifest["tree_root"]) == (120, base64.b64encode(store.root()).decode())
    engine.dispose()
    position = next(n for n, line in enumerate(lines) if '"seq":50,' in line)
    record = json.loads(lines[position])
    rewritten = Entry(50, AuditEvent.from_dict({**record["event"], "actor_id": "nobody"}))
    lines[position] = json.dumps(rewritten.to_record(), sort_keys=True, separators=(",", ":")) + "\n"
    out.write_text("".join(lines))
    result = _cli("verify", str(out), "--public-key", str(key_files[1]), "--checkpoint-every", "40")
    checkpoint_80 = next(n for n, line in enumerate(lines, 1) if '"type":"checkpoint"' in line and "\\n80\\n" in line)
    assert result.returncode == 1
    assert result.stdout.startswith(f"FAILED: checkpoint_mismatch at position {checkpoint_80}: tree checkpoint of size 80")


def test_a_line_nested_past_what_the_parser_reads_is_reported_malformed_not_a_crash(sqlite_with_log, key_files,
                                                                                     tmp_path):
    out = tmp_path / "export.jsonl"
    assert _cli("export", "--db", sqlite_with_log, "--format", "jsonl", "--signing-key", str(key_files[0]),
                "-o", str(out)).returncode == 0
    lines = out.read_text().splitlines(keepends=True)
    lines[5] = '{"type":"entry","details":' + "[" * 100_000 + "]" * 100_000 + "}\n"
    out.write_text("".join(lines))
    result = _cli("verify", str(out), "--public-key", str(key_files[1]), "--checkpoint-every", "40")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stdout.startswith("FAILED: malformed at position 6") and "nested too deeply" in result.stdout


def test_a_full_jsonl_export_without_its_checkpoints_fails(sqlite_with_log, key_files, tmp_path):
    """The manifest signs the entries, not the checkpoints: dropping them must still be noticed."""
    out = tmp_path / "export.jsonl"
    assert _cli("export", "--db", sqlite_with_log, "--format", "jsonl", "--signing-key", str(key_files[0]),
                "-o", str(out)).returncode == 0
    out.write_text("".join(line for line in out.read_text().splitlines(keepends=True) if '"type":"checkpoint"' not in line))
    result = _cli("verify", str(out), "--public-key", str(key_files[1]), "--checkpoint-every", "40")
    assert result.returncode == 1
    assert "checkpoint missing at seq 40" in result.stdout


def test_filtered_csv_and_fhir_exports_write_signed_manifests_naming_the_tree_their_rows_are_proved_in(
        sqlite_url, key_files, tmp_path):
    engine = sa.create_engine(sqlite_url)
    create_tables(engine)
    store = SqlAuditStore(engine, SigningKey.from_pem(key_files[0].read_bytes()))
    store.append_many(AuditEvent(action="chart.read", outcome="allowed", actor_id=f"u{i % 2}") for i in range(10))
    for fmt in ("csv", "fhir"):
        out = tmp_path / f"export.{fmt}"
        result = _cli("export", "--db", sqlite_url, "--format", fmt, "--actor", "u1", "--since", "2000-01-01",
                      "--signing-key", str(key_files[0]), "-o", str(out))
        assert result.returncode == 0, result.stderr
        manifest = json.loads(Path(f"{out}.manifest.json").read_text())
        assert (manifest["format"], manifest["count"], manifest["contiguous"]) == (fmt, 5, False)
        assert "actor_id=u1" in manifest["filter"]
        assert (manifest["tree_size"], manifest["tree_root"]) == (10, base64.b64encode(store.root()).decode())
    rows = list(csv.DictReader((tmp_path / "export.csv").open()))
    assert len(rows) == 5
    for row in rows:  # each row is a leaf of the tree the manifest names: an auditor asks for its inclusion proof
        index = int(row["seq"]) - 1
        verify_inclusion(index, 10, base64.b64decode(row["leaf_hash"]), store.inclusion_proof(index, 10), store.root())
    engine.dispose()


def test_usage_and_io_errors_exit_2(tmp_path):
    assert _cli("verify", str(tmp_path / "missing.jsonl")).returncode == 2
    assert _cli("verify").returncode == 2


# --------------------------------------------------------------------------- CSV and FHIR NDJSON exports

VARIED_EVENTS = [
    *(AuditEvent(action="chart.read", outcome="allowed", actor_id=f"u{i % 3}", actor_role="clinician",
                 patient_id="p1", resource_type="results", resource_id="p1",
                 details={"count": i, "paged": i % 2 == 0, "cursor": None}) for i in range(20)),
    # a user without portal roles (an empty role list, not none) and a section without an id
    AuditEvent(action="chart.read", outcome="denied", actor_id="nora", actor_role="", resource_type="chart"),
    AuditEvent(action="audit.verify", outcome="allowed", actor_role="operator", reason="'quoted",
               details={"ok": True, "entries": 0}),
    # a user agent a spreadsheet would run as a formula, and a reason with quotes, a comma and a line break
    AuditEvent(action="signin.failure", outcome="denied", source_ip="10.0.0.9",
               user_agent='=HYPERLINK("http://evil.example","x")', reason='bad "state", retried\nonce'),
]
EXPORT_SUFFIX = {"csv": "csv", "fhir": "ndjson"}


@pytest.fixture(params=["csv", "fhir"])
def sidecar_export(request, sqlite_url, key_files, tmp_path) -> Path:
    """A CSV or FHIR NDJSON export written by `python -m audit export`, its signed manifest beside it."""
    engine = sa.create_engine(sqlite_url)
    create_tables(engine)
    SqlAuditStore(engine, SigningKey.from_pem(key_files[0].read_bytes())).append_many(VARIED_EVENTS)
    engine.dispose()
    out = tmp_path / f"export.{EXPORT_SUFFIX[request.param]}"
    result = _cli("export", "--db", sqlite_url, "--format", request.param, "--signing-key", str(key_files[0]),
                  "-o", str(out))
    assert result.returncode == 0, result.stderr
    return out


def _records(export: Path) -> list:
    """CSV: the header and rows as lists of cells; NDJSON: the resources."""
    if export.suffix == ".csv":
        return list(csv.reader(export.open(newline="")))
    return [json.loads(line) for line in export.read_text().splitlines()]


def _write_records(export: Path, records: list) -> None:
    if export.suffix == ".csv":
        with export.open("w", newline="") as handle:
            csv.writer(handle, lineterminator="\r\n").writerows(records)
    else:
        export.write_text("".join(json.dumps(record) + "\n" for record in records))


def _seq(record) -> int:
    return int(record[0]) if isinstance(record, list) else record["extension"][0]["valueInteger"]


def _index(records: list, seq: int) -> int:
    """Where the record of this seq is (a CSV's header is records[0])."""
    start = 1 if isinstance(records[0], list) else 0
    return next(i for i in range(start, len(records)) if _seq(records[i]) == seq)


def _verify(export: Path, public_key: Path, *extra: str) -> subprocess.CompletedProcess:
    return _cli("verify", str(export), "--public-key", str(public_key), *extra)


def test_intact_csv_and_fhir_exports_verify_against_their_manifest(sidecar_export, key_files):
    result = _verify(sidecar_export, key_files[1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"OK: export intact ({len(VARIED_EVENTS)} entries, 1 signatures)"
    self_asserted = _cli("verify", str(sidecar_export))
    assert self_asserted.returncode == 0 and "self-asserted" in self_asserted.stderr


def test_the_manifest_can_be_given_elsewhere(sidecar_export, key_files, tmp_path):
    moved = tmp_path / "signed-manifest.json"
    Path(f"{sidecar_export}.manifest.json").rename(moved)
    result = _verify(sidecar_export, key_files[1], "--manifest", str(moved))
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_edited_row_fails(sidecar_export, key_files):
    records = _records(sidecar_export)
    target = _index(records, 5)
    if sidecar_export.suffix == ".csv":
        records[target][CSV_COLUMNS.index("outcome")] = "denied"
    else:
        records[target]["outcome"] = "4"  # what a FHIR consumer reads: the hashed event is left alone
    _write_records(sidecar_export, records)
    result = _verify(sidecar_export, key_files[1])
    assert result.returncode == 1
    assert result.stdout.startswith(f"FAILED: edited at position {target + 1}: seq 5"), result.stdout


@pytest.mark.parametrize("sidecar_export", ["csv"], indirect=True)
def test_a_csv_formula_unescaped_fails(sidecar_export, key_files):
    """Removing the spreadsheet escape leaves the entry's hash intact but makes the cell a live formula."""
    records = _records(sidecar_export)
    target = _index(records, len(VARIED_EVENTS))
    agent = CSV_COLUMNS.index("user_agent")
    assert records[target][agent].startswith("'=")
    records[target][agent] = records[target][agent][1:]
    _write_records(sidecar_export, records)
    result = _verify(sidecar_export, key_files[1])
    assert result.returncode == 1
    assert result.stdout.startswith(f"FAILED: edited at position {target + 1}: seq {len(VARIED_EVENTS)}"), result.stdout


def test_a_dropped_row_fails(sidecar_export, key_files):
    records = _records(sidecar_export)
    target = _index(records, 10)
    del records[target]
    _write_records(sidecar_export, records)
    result = _verify(sidecar_export, key_files[1])
    assert result.returncode == 1
    assert result.stdout.startswith(f"FAILED: deleted at position {target + 1}: seq 10 missing before seq 11")


def test_a_reordered_pair_fails(sidecar_export, key_files):
    records = _records(sidecar_export)
    first, second = _index(records, 10), _index(records, 11)
    records[first], records[second] = records[second], records[first]
    _write_records(sidecar_export, records)
    result = _verify(sidecar_export, key_files[1])
    assert result.returncode == 1
    assert result.stdout.startswith(f"FAILED: reordered at position {first + 1}"), result.stdout


def test_another_key_fails(sidecar_export, tmp_path):
    other = tmp_path / "other.pub.pem"
    other.write_bytes(SigningKey.generate().public_pem())
    result = _verify(sidecar_export, other)
    assert result.returncode == 1
    assert result.stdout.startswith("FAILED: bad_checkpoint_signature at position 0: the export manifest's signature")


def test_a_missing_manifest_cannot_be_checked(sidecar_export, key_files):
    Path(f"{sidecar_export}.manifest.json").unlink()
    result = _verify(sidecar_export, key_files[1])
    assert result.returncode == 2, result.stdout
    assert f"no manifest for {sidecar_export}" in result.stderr and "--manifest" in result.stderr
    assert "FAILED" not in result.stdout


def test_the_manifest_of_another_format_cannot_be_checked(sidecar_export, key_files, tmp_path):
    wrong = tmp_path / "wrong.manifest.json"
    manifest = json.loads(Path(f"{sidecar_export}.manifest.json").read_text())
    wrong.write_text(json.dumps({**manifest, "format": "fhir" if manifest["format"] == "csv" else "csv"}))
    result = _verify(sidecar_export, key_files[1], "--manifest", str(wrong))
    assert result.returncode == 2 and "is the manifest of a" in result.stderr


@pytest.mark.parametrize("sidecar_export", ["fhir"], indirect=True)
def test_a_fhir_export_without_the_hashed_event_cannot_be_checked(sidecar_export, key_files):
    """FHIR exports written before they carried extension #event cannot be re-hashed: say so, never "tampered"."""
    records = _records(sidecar_export)
    for record in records:
        record["extension"] = [item for item in record["extension"] if not item["url"].endswith("#event")]
    _write_records(sidecar_export, records)
    result = _verify(sidecar_export, key_files[1])
    assert result.returncode == 2 and "extension #event" in result.stderr


def test_a_format_it_cannot_check_exits_2(tmp_path, key_files):
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    result = _cli("verify", str(report), "--public-key", str(key_files[1]))
    assert result.returncode == 2 and "no format this verifier can check" in result.stderr


def test_the_installed_portal_audit_command_tells_its_version_and_exit_codes():
    command = Path(sys.executable).with_name("portal-audit")
    version = subprocess.run([str(command), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"portal-audit {importlib.metadata.version('patient-portal')}"
    for sub in ("verify", "export", "prove-inclusion", "witness"):
        help_text = subprocess.run([str(command), sub, "--help"], capture_output=True, text=True, timeout=60).stdout
        assert "exit status: 0 verified or written, 1 tampering found, 2 unusable input" in " ".join(help_text.split())


def test_unusable_input_is_exit_2_with_a_message_never_a_traceback(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"tree_size":' + "[" * 100_000 + "]" * 100_000 + "}")
    for args in (("check-inclusion", str(deep)), ("check-consistency", str(deep)),
                 ("verify", "--db", "postgresql://nobody@127.0.0.1:1/none"),
                 ("prove-inclusion", "--db", "mysql://nobody@127.0.0.1:1/none", "--index", "0")):
        result = _cli(*args)
        assert result.returncode == 2 and result.stderr.startswith("error:"), (args, result.stderr[-300:])
        assert "Traceback" not in result.stderr
