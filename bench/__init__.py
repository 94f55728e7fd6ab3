"""Benchmarks (`make bench`, docs/performance.md)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from app.audit.signing import create_key_files


def audit_signing_env() -> dict[str, str]:
    """A fresh audit signing key for a benchmark's servers, as a deployment mounts one:
    the audit writer signs every chain head it writes, so the benchmarks pay for it."""
    path = Path(tempfile.mkdtemp(prefix="accord-bench-key-")) / "audit-signing.key"
    create_key_files(path)
    return {"ACCORD_AUDIT_SIGNING_KEY_FILE": str(path)}
