"""The provider's persistent RS256 signing key.

The key lives in the instance folder so ID tokens (and the ``id_token_hint`` the portal sends at
sign-out) stay verifiable across restarts of the development server.
"""
from __future__ import annotations

import os
from pathlib import Path

from joserfc.jwk import RSAKey

from portal.keyfiles import rsa_key_file

KEY_FILENAME = "devidp-signing-key.pem"


def load_signing_key(instance_path: str | os.PathLike[str]) -> RSAKey:
    """Load the signing key from the instance folder, creating it on first use."""
    return rsa_key_file(Path(instance_path) / KEY_FILENAME)
