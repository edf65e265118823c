"""Field encryption at rest: AES-256-GCM envelopes, blind indexes and key rotation.

Usage in models::

    class Base(DeclarativeBase): ...
    register_encryption(Base)

    class Patient(Base):
        __tablename__ = "patient"
        id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
        mrn: Mapped[str | None] = mapped_column(Encrypted(str))
        mrn_bidx: Mapped[str | None] = blind_index_column("mrn", normalise_identifier)

This package does not import Flask; the application calls ``install_keyring``
once at start.
"""
from .blind_index import (
    blind_index_column,
    normalise_date,
    normalise_identifier,
    normalise_text,
)
from .column import Encrypted, Sealed
from .errors import (
    ConfigurationError,
    CryptoError,
    DecryptionError,
    EncryptionError,
    KeyringError,
    KeyringNotInstalledError,
)
from .keyring import (
    Keyring,
    active_keyring,
    generate_keyring_json,
    install_keyring,
    write_dev_keyring,
)
from .orm import new_id, register_encryption
from .probe import check_stored_values
from .registry import blind_index_terms, encrypted_models
from .rotation import RotationSummary, rotate, rotation_status
from .rows import open_row

__all__ = [
    "ConfigurationError",
    "CryptoError",
    "DecryptionError",
    "Encrypted",
    "EncryptionError",
    "Keyring",
    "KeyringError",
    "KeyringNotInstalledError",
    "RotationSummary",
    "Sealed",
    "active_keyring",
    "blind_index_column",
    "check_stored_values",
    "blind_index_terms",
    "encrypted_models",
    "generate_keyring_json",
    "install_keyring",
    "new_id",
    "normalise_date",
    "normalise_identifier",
    "normalise_text",
    "open_row",
    "register_encryption",
    "rotate",
    "rotation_status",
    "write_dev_keyring",
]
