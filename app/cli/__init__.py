"""The `accord` command: serve, migrate, manage agreements, the register and clients, audit,
export policy.

One module per command group; each adds its own subcommands.
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.exc import OperationalError

from app.audit.signing import SigningKeyError
from app.cli import agreements, audit, clients, db, decide, keys, policy, register, serve
from app.policy.files import DocumentError

COMMAND_GROUPS = (serve, db, agreements, policy, decide, register, clients, audit, keys)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accord", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (DocumentError, SigningKeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:  # the driver's first line; never the URL's password
        reason = str(exc.orig or exc).splitlines()[0]
        print(f"error: ACCORD_DATABASE_URL cannot be used: {reason}", file=sys.stderr)
        return 2
    return code
