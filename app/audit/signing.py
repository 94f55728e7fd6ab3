"""Signatures over the audit chain with a key the database does not hold (pure: no I/O
but reading key files).

The audit writer signs every chain head it writes and a purge signs every checkpoint
it records, with an Ed25519 private key read from ACCORD_AUDIT_SIGNING_KEY_FILE. A
database writer can change rows and recompute every hash, but cannot sign the head or
a checkpoint that follows from it, so `accord audit verify` with the public key
detects it. A signature is stored as text, `ed25519:<key id>:<base64 signature>`, the
key id naming the public key that checks it (so keys can be rotated).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

ALGORITHM = "ed25519"


class SigningKeyError(ValueError):
    """A key file that is missing, unreadable or not an Ed25519 key; or no key at all."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 over the raw public key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class AuditSigner:
    private_key: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id(self.private_key.public_key())

    def sign(self, statement: bytes) -> str:
        signature = base64.b64encode(self.private_key.sign(statement)).decode()
        return f"{ALGORITHM}:{self.key_id}:{signature}"

    def keyring(self) -> KeyRing:
        return KeyRing([self.private_key.public_key()])


class KeyRing:
    """The public keys an auditor trusts, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys = {key_id(key): key for key in keys}
        if not self._keys:
            raise SigningKeyError("no public key to check signatures with")

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def problem(self, statement: bytes, signature: str | None) -> str | None:
        """Why `signature` does not prove `statement`; None when it does."""
        if not signature:
            return "is not signed"
        algorithm, _, rest = signature.partition(":")
        signer, _, encoded = rest.partition(":")
        if algorithm != ALGORITHM or not encoded:
            return "has a malformed signature"
        key = self._keys.get(signer)
        if key is None:
            return f"is signed by key {signer}, which is not trusted here"
        try:
            key.verify(base64.b64decode(encoded, validate=True), statement)
        except (InvalidSignature, ValueError):
            return f"has a signature that does not verify with key {signer}"
        return None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read {path}: {exc.strerror}") from exc


def load_signer(path: Path) -> AuditSigner:
    """The private key in the PEM file at `path` (unencrypted PKCS#8, Ed25519)."""
    try:
        key = load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 key")
    return AuditSigner(key)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The public key in the PEM file at `path`, or the public half of a private key."""
    data = _read(path)
    if b"PRIVATE KEY" in data:
        return load_signer(path).private_key.public_key()
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path} is not an Ed25519 key")
    return key


def configured_signer(key_file: Path | None, *, unsigned: bool) -> AuditSigner | None:
    """The signer a replica or command uses: the key file's, or None only when the
    deployment has said it runs unsigned (development only)."""
    if key_file is not None:
        return load_signer(key_file)
    if unsigned:
        return None
    raise SigningKeyError(
        "no audit signing key: set ACCORD_AUDIT_SIGNING_KEY_FILE to an Ed25519 key made by "
        "`accord keys audit-signing create` (or ACCORD_AUDIT_UNSIGNED=true, for development only)"
    )


def create_key_files(path: Path) -> AuditSigner:
    """Write a new private key to `path` (mode 0600, never over an existing file) and its
    public key to `path`.pub."""
    signer = AuditSigner(Ed25519PrivateKey.generate())
    pem = signer.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise SigningKeyError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(descriptor, "wb") as private_file:
        private_file.write(pem)
    public_path(path).write_text(public_pem(signer.private_key.public_key()))
    return signer


def public_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub")
