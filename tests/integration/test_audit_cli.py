"""`python -m audit` as an auditor runs it: exit 0 when intact, 1 on tampering, 2 on usage/IO errors."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit import AuditEvent, SigningKey, SqlAuditStore, create_tables

PROJECT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit", *args], cwd=PROJECT, capture_output=True, text=True,
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
    result = _cli("verify", "--db", db_with_log, "--public-key", str(key_files[1]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK: chain intact (120 entries, 3 signatures)"
    other = SigningKey.generate().public_raw_b64()
    assert _cli("verify", "--db", db_with_log, "--public-key", other).returncode == 1


def test_jsonl_export_verifies_and_an_edit_fails(sqlite_with_log, key_files, tmp_path):
    out = tmp_path / "export.jsonl"
    exported = _cli("export", "--db", sqlite_with_log, "--format", "jsonl", "--signing-key", str(key_files[0]),
                    "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    verified = _cli("verify", str(out), "--public-key", str(key_files[1]))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    self_asserted = _cli("verify", str(out))
    assert self_asserted.returncode == 0 and "self-asserted" in self_asserted.stderr

    lines = out.read_text().splitlines(keepends=True)
    lines[10] = lines[10].replace('"outcome":"denied"', '"outcome":"allowed"').replace(
        '"actor_id":"u', '"actor_id":"x')
    out.write_text("".join(lines))
    tampered = _cli("verify", str(out), "--public-key", str(key_files[1]))
    assert tampered.returncode == 1
    assert tampered.stdout.startswith("FAILED: edited at position 11")


def test_filtered_csv_and_fhir_exports_write_signed_manifests(sqlite_url, key_files, tmp_path):
    engine = sa.create_engine(sqlite_url)
    create_tables(engine)
    SqlAuditStore(engine, SigningKey.from_pem(key_files[0].read_bytes())).append_many(
        AuditEvent(action="chart.read", outcome="allowed", actor_id=f"u{i % 2}") for i in range(10))
    for fmt in ("csv", "fhir"):
        out = tmp_path / f"export.{fmt}"
        result = _cli("export", "--db", sqlite_url, "--format", fmt, "--actor", "u1", "--since", "2000-01-01",
                      "--signing-key", str(key_files[0]), "-o", str(out))
        assert result.returncode == 0, result.stderr
        manifest = json.loads(Path(f"{out}.manifest.json").read_text())
        assert (manifest["format"], manifest["count"], manifest["contiguous"]) == (fmt, 5, False)
        assert "actor_id=u1" in manifest["filter"]
    assert len(list(csv.DictReader((tmp_path / "export.csv").open()))) == 5


def test_usage_and_io_errors_exit_2(tmp_path):
    assert _cli("verify", str(tmp_path / "missing.jsonl")).returncode == 2
    assert _cli("verify").returncode == 2
