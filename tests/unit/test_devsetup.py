"""`make run`'s first step: development secrets are created once, private, and kept across runs."""
import stat

from portal.config import Settings
from portal.devsetup import main


def test_dev_secrets_are_private_and_stable(tmp_path):
    env_file = main(tmp_path)
    first = env_file.read_text()
    assert main(tmp_path).read_text() == first
    for name in ("dev.env", "keyring.json", "audit-signing-key.pem"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    values = dict(line.split("=", 1) for line in first.splitlines() if line)
    values.update(PORTAL_EXTERNAL_URL="http://127.0.0.1:5000", PORTAL_OIDC_ISSUER="http://127.0.0.1:5000/devidp")
    settings = Settings.from_env(values)
    assert settings.dev_idp and not settings.production
