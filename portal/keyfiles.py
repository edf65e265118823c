"""RSA signing keys kept in files: created once, atomically, readable by the owner only.

The development OpenID provider and the authorization server for apps each sign tokens with such a
key. The ``kid`` is the RFC 7638 thumbprint, so it changes exactly when the key does and relying
parties refetch the JWKS.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from joserfc.jwk import RSAKey

KEY_BITS = 2048


def rsa_signing_key(pem: bytes | str) -> RSAKey:
    """A private RSA key (PEM) as a signing JWK with its thumbprint as kid; ValueError when it is not one."""
    bare = RSAKey.import_key(pem)
    if not bare.is_private:
        raise ValueError("expected an RSA private key")
    return RSAKey.import_key(pem, {"kid": bare.thumbprint(), "use": "sig", "alg": "RS256"})


def rsa_key_file(path: Path) -> RSAKey:
    """The key in ``path``, created first when the file does not exist yet."""
    if not path.exists():
        _create_key_file(path)
    return rsa_signing_key(path.read_bytes())


def _create_key_file(path: Path) -> None:
    """Write a new key with mode 0600, hard-linked into place: if another process won the race, its key is
    kept, so two workers never end up signing with different keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = RSAKey.generate_key(KEY_BITS).as_pem(private=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".key-")
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
    try:
        os.link(tmp_name, path)
    except FileExistsError:
        return
    except OSError:
        # Filesystems without hard links: an atomic rename is the next best thing.
        os.replace(tmp_name, path)
