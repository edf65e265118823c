"""`make run`'s first step: development secrets are created once, private, and kept across runs."""
import stat

from audit.witness import load_witness_key
from portal.config import Settings
from portal.devsetup import main


def test_dev_secrets_are_private_and_stable(tmp_path):
    env_file = main(tmp_path)
    first = env_file.read_text()
    assert main(tmp_path).read_text() == first
    for name in ("dev.env", "keyring.json", "audit-signing-key.pem"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    values = dict(line.split("=", 1) for line in first.splitlines() if line)
    values.update(PORTAL_EXTERNAL_URL="http://127.0.0.1:5000", PORTAL_OIDC_ISSUER="http://127.0.0.1:5000/devidp",
                  PORTAL_AUDIT_WITNESS_URL="http://127.0.0.1:5071")  # the addresses the Makefile adds
    settings = Settings.from_env(values)
    assert settings.dev_idp and not settings.production


def test_the_development_witness_gets_its_own_private_key_and_the_portal_pins_it(tmp_path):
    env_file = main(tmp_path)
    assert stat.S_IMODE((tmp_path / "witness.key").stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line)
    assert values["PORTAL_AUDIT_WITNESS_KEY"] == load_witness_key(str(tmp_path / "witness.key")).vkey()


def test_a_dev_env_from_before_the_witness_gains_its_key_and_keeps_the_rest(tmp_path):
    env_file = main(tmp_path)
    old = "\n".join(line for line in env_file.read_text().splitlines() if "WITNESS" not in line) + "\n"
    env_file.write_text(old)
    updated = main(tmp_path).read_text()
    assert updated.startswith(old) and updated.count("PORTAL_AUDIT_WITNESS_KEY=") == 1
    assert main(tmp_path).read_text() == updated
