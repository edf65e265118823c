"""The provider's persistent RS256 signing key.

The key lives in the instance folder so ID tokens (and the ``id_token_hint`` the portal sends at
sign-out) stay verifiable across restarts of the development server. The ``kid`` is the RFC 7638
thumbprint, so it changes exactly when the key does and relying parties refetch the JWKS.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from joserfc.jwk import RSAKey

KEY_FILENAME = "devidp-signing-key.pem"
KEY_BITS = 2048


def load_signing_key(instance_path: str | os.PathLike[str]) -> RSAKey:
    """Load the signing key from the instance folder, creating it on first use."""
    path = Path(instance_path) / KEY_FILENAME
    if not path.exists():
        _create_key_file(path)
    pem = path.read_bytes()
    bare = RSAKey.import_key(pem)
    return RSAKey.import_key(pem, {"kid": bare.thumbprint(), "use": "sig", "alg": "RS256"})


def _create_key_file(path: Path) -> None:
    """Write a new key atomically with mode 0600.

    The key is written to a private temporary file and then hard-linked into place, which fails if
    another process won the race; that process's key is then kept, so two workers never end up
    signing with different keys.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = RSAKey.generate_key(KEY_BITS).as_pem(private=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".devidp-key-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o600)
        _link_into_place(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _link_into_place(tmp_name: str, path: Path) -> None:
    """Publish the temporary file under the final name without replacing an existing key."""
    try:
        os.link(tmp_name, path)
    except FileExistsError:
        return
    except OSError:
        # Filesystems without hard links: an atomic rename is the next best thing.
        os.replace(tmp_name, path)
