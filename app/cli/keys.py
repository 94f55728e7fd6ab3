"""`accord keys`: the audit signing key (Ed25519), made once and kept outside the database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.audit.signing import create_key_files, load_public_key, public_path, public_pem
from app.audit.signing import key_id as public_key_id
from app.config import get_settings


def register(commands: Any) -> None:
    keys = commands.add_parser("keys", help="signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    audit_signing = keys.add_parser(
        "audit-signing", help="the key that signs the audit chain head and checkpoints"
    ).add_subparsers(dest="audit_signing_command", required=True)
    create = audit_signing.add_parser(
        "create", help="write a new private key (mode 0600) and its public key (FILE.pub)"
    )
    create.add_argument(
        "--out", type=Path, required=True, help="the private key's file (never overwritten)"
    )
    create.set_defaults(run=_create)
    public = audit_signing.add_parser(
        "public", help="print the public key of ACCORD_AUDIT_SIGNING_KEY_FILE (or --key-file)"
    )
    public.add_argument("--key-file", type=Path, help="a private or public key file")
    public.set_defaults(run=_public)


def _create(args: argparse.Namespace) -> int:
    signer = create_key_files(args.out)
    print(
        f"audit signing key {signer.key_id} written to {args.out} (keep it secret: mount it as "
        f"ACCORD_AUDIT_SIGNING_KEY_FILE); its public key, for auditors, to {public_path(args.out)}"
    )
    return 0


def _public(args: argparse.Namespace) -> int:
    path = args.key_file or get_settings().audit_signing_key_file
    if path is None:
        print("error: give --key-file or set ACCORD_AUDIT_SIGNING_KEY_FILE", file=sys.stderr)
        return 2
    key = load_public_key(path)
    print(f"key id {public_key_id(key)}", file=sys.stderr)
    print(public_pem(key), end="")
    return 0
