"""The `accord` command: serve, migrate, validate and import agreements, export policy."""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import tempfile
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from types import FrameType
from typing import NoReturn

from sqlalchemy.orm import Session

from app.agreements.service import ImportRefused, import_agreements
from app.audit.integrity import head_decision_id, purge_before, read_head, verify_chain
from app.auth import SCOPES
from app.clients.service import create_client, revoke_client
from app.config import PROJECT_DIR, get_settings
from app.db import make_engine, upgrade_schema
from app.decision.policy_tests import run_test_file
from app.errors import Conflict, InvalidRequest, NotFound
from app.live_policy import load_state
from app.policy.agreements import AgreementInvalid, parse_agreement
from app.policy.files import DocumentError, agreement_documents, load_vocabulary, read_yaml


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    workers = args.workers or settings.workers
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Workers are separate processes: their metrics are summed through files here.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="accord-metrics-")
    # On SIGTERM uvicorn stops accepting, finishes in-flight requests (at most
    # ACCORD_SHUTDOWN_GRACE_SECONDS), runs the lifespan shutdown (the audit writer
    # flushes), then raises SIGTERM again to the handler it found: exit 0 there,
    # so a clean shutdown is not reported as death by signal (143).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)


def _db_upgrade(_: argparse.Namespace) -> int:
    upgrade_schema(get_settings().database_url)
    print("database at the latest schema")
    return 0


def _validate(args: argparse.Namespace) -> int:
    vocabulary = load_vocabulary(get_settings().vocabulary_file)
    failed = 0
    for source, document in agreement_documents(Path(args.path)):
        try:
            agreement = parse_agreement(document, vocabulary, source=source)
            print(f"ok {source}: {agreement.id} ({agreement.status})")
        except AgreementInvalid as exc:
            failed += 1
            print(f"invalid {exc}", file=sys.stderr)
    return 1 if failed else 0


def _import(args: argparse.Namespace) -> int:
    settings = get_settings()
    vocabulary = load_vocabulary(settings.vocabulary_file)
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            results = import_agreements(
                session,
                agreement_documents(Path(args.path)),
                vocabulary=vocabulary,
                actor=args.actor,
            )
            session.commit()
    except ImportRefused as exc:
        print(f"import refused, nothing stored:\n{exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    for result in results:
        state = "new version" if result.changed else "unchanged"
        print(f"{result.agreement_id} v{result.version}: {state}")
    return 0


def _create_client(args: argparse.Namespace) -> int:
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            row, key = create_client(
                session,
                client_id=args.id,
                name=args.name or args.id,
                scopes=_listed(args.scopes),
                agencies=_listed(args.agencies),
                vocabulary=load_vocabulary(settings.vocabulary_file),
                actor=args.actor,
            )
            summary = f"client {row.id}: scopes {', '.join(row.scopes)}; agencies " + ", ".join(
                row.agencies
            )
            session.commit()
    except (InvalidRequest, Conflict) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(summary)
    if args.key_file:
        path = Path(args.key_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(key + "\n", encoding="utf-8")
        print(f"key written to {path} (it is not stored anywhere else)")
    else:
        print(f"key (shown once, store it now): {key}")
    return 0


def _revoke_client(args: argparse.Namespace) -> int:
    engine = make_engine(get_settings().database_url)
    try:
        with Session(engine) as session:
            revoke_client(session, client_id=args.id, actor=args.actor)
            session.commit()
    except (NotFound, Conflict) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"client {args.id} revoked")
    return 0


def _audit_verify(_: argparse.Namespace) -> int:
    engine = make_engine(get_settings().database_url)
    try:
        with engine.connect() as connection:
            result = verify_chain(connection)
    finally:
        engine.dispose()
    if result.broken is not None:
        link = result.broken
        print(
            f"BROKEN at row {link.seq} (decision {link.decision_id or '-'}): {link.problem}; "
            f"{result.rows_checked} rows verified before it",
            file=sys.stderr,
        )
        return 1
    print(f"intact: {result.rows_checked} rows verified, chain head at row {result.last_seq}")
    return 0


def _audit_purge(args: argparse.Namespace) -> int:
    settings = get_settings()
    oldest_kept = datetime.now(UTC) - timedelta(days=settings.audit_retention_days)
    before = (
        oldest_kept if args.before is None else datetime.combine(args.before, time(), tzinfo=UTC)
    )
    if before > datetime.now(UTC):
        print(f"error: {before.date()} is in the future; nothing purged", file=sys.stderr)
        return 1
    if before > oldest_kept:
        print(
            f"error: {before.date()} is inside the retention period "
            f"(ACCORD_AUDIT_RETENTION_DAYS={settings.audit_retention_days}); nothing purged",
            file=sys.stderr,
        )
        return 1
    engine = make_engine(settings.database_url)  # it verifies without the write lock
    try:
        purge = purge_before(engine, before=before, actor=args.actor)
    except InvalidRequest as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if purge is None:
        print(f"nothing decided before {before.date()} to purge")
    else:
        print(
            f"purged {purge.rows_removed} rows up to row {purge.last_seq}; "
            "checkpoint recorded, the rest of the chain still verifies"
        )
    return 0


def _audit_head(_: argparse.Namespace) -> int:
    """Print the chain head as one JSON line, to be copied outside the database."""
    engine = make_engine(get_settings().database_url)
    try:
        with engine.connect() as connection:
            head = read_head(connection)
            decision_id = head_decision_id(connection, head)
    finally:
        engine.dispose()
    read_at = datetime.now(UTC).isoformat(timespec="seconds")
    record = {"seq": head.seq, "hash": head.hash, "decision_id": decision_id, "read_at": read_at}
    print(json.dumps(record))
    return 0


def _listed(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _export(args: argparse.Namespace) -> int:
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        policy = load_state(
            engine, vocabulary_file=settings.vocabulary_file, model_file=settings.model_file
        ).policy
    finally:
        engine.dispose()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.conf").write_text(policy.enforcer.model_text, encoding="utf-8")
    lines = policy.all_lines()
    with (out / "policy.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for line in lines:
            writer.writerow(("p", *line))
    print(f"revision {policy.revision}: {len(lines)} lines written to {out}")
    return 0


def _openapi(_: argparse.Namespace) -> int:
    import json

    import yaml

    from app.main import create_app

    schema = json.loads(json.dumps(create_app().openapi()))
    print(yaml.safe_dump(schema, sort_keys=False, allow_unicode=True), end="")
    return 0


def _policy_test(args: argparse.Namespace) -> int:
    settings = get_settings()
    vocabulary = load_vocabulary(settings.vocabulary_file)
    try:
        agreements = [
            parse_agreement(document, vocabulary, source=source)
            for source, document in agreement_documents(Path(args.agreements))
        ]
    except AgreementInvalid as exc:
        print(f"invalid {exc}", file=sys.stderr)
        return 2
    path = Path(args.path)
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    passed = failed = 0
    for file in files:
        results = run_test_file(
            read_yaml(file),
            vocabulary=vocabulary,
            agreements=agreements,
            model_text=settings.model_file.read_text(encoding="utf-8"),
            now=datetime.now(UTC),
        )
        for result in results:
            if result.passed:
                passed += 1
                if args.verbose:
                    print(f"PASS {file.name}: {result.name}")
                continue
            failed += 1
            print(f"FAIL {file.name}: {result.name}")
            for mismatch in result.mismatches:
                print(f"    {mismatch}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accord", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="bind address (ACCORD_HOST)")
    serve.add_argument("--port", type=int, help="port (ACCORD_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (ACCORD_WORKERS)")
    serve.set_defaults(run=_serve)

    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True
    )
    db.add_parser("upgrade", help="apply migrations up to the latest").set_defaults(run=_db_upgrade)

    agreements = commands.add_parser("agreements", help="agreement files").add_subparsers(
        dest="agreements_command", required=True
    )
    validate = agreements.add_parser("validate", help="check files against the vocabulary")
    validate.add_argument("path", help="a YAML file or a folder of them")
    validate.set_defaults(run=_validate)
    imports = agreements.add_parser("import", help="store changed files as new versions")
    imports.add_argument("path", help="a YAML file or a folder of them")
    imports.add_argument("--actor", default="cli", help="who is importing (recorded)")
    imports.set_defaults(run=_import)

    policy = commands.add_parser("policy", help="compiled policy").add_subparsers(
        dest="policy_command", required=True
    )
    export = policy.add_parser("export", help="write Casbin model.conf and policy.csv")
    export.add_argument("--out", default="policy-export", help="folder to write into")
    export.set_defaults(run=_export)
    test = policy.add_parser("test", help="run policy test files against agreement files")
    test.add_argument("path", help="a test file or a folder of them (policies/tests)")
    test.add_argument(
        "--agreements",
        default=str(PROJECT_DIR / "policies" / "agreements"),
        help="agreement file or folder to test (default: policies/agreements)",
    )
    test.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    test.set_defaults(run=_policy_test)
    clients = commands.add_parser("clients", help="API clients").add_subparsers(
        dest="clients_command", required=True
    )
    create = clients.add_parser("create", help="create a client and print its key once")
    create.add_argument("--id", required=True, help="the client's id, e.g. police-rms")
    create.add_argument("--name", help="a readable name")
    create.add_argument("--scopes", required=True, help="comma-separated: " + ", ".join(SCOPES))
    create.add_argument("--agencies", required=True, help="comma-separated agency ids")
    create.add_argument("--key-file", help="write the key to this file (mode 600), not stdout")
    create.add_argument("--actor", default="cli", help="who is creating it (recorded)")
    create.set_defaults(run=_create_client)
    revoke = clients.add_parser("revoke", help="revoke a client's key")
    revoke.add_argument("id")
    revoke.add_argument("--actor", default="cli", help="who is revoking it (recorded)")
    revoke.set_defaults(run=_revoke_client)

    audit = commands.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    audit.add_parser("verify", help="check the hash chain; exit 1 at a broken link").set_defaults(
        run=_audit_verify
    )
    purge = audit.add_parser("purge", help="remove rows older than the retention period")
    purge.add_argument(
        "--before",
        type=date.fromisoformat,
        help="YYYY-MM-DD (default: the retention period's start)",
    )
    purge.add_argument("--actor", default="cli", help="who is purging (recorded)")
    purge.set_defaults(run=_audit_purge)
    audit.add_parser(
        "head", help="print the chain head (seq, hash) as JSON, to keep outside the database"
    ).set_defaults(run=_audit_head)

    commands.add_parser("openapi", help="print the served OpenAPI schema as YAML").set_defaults(
        run=_openapi
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except DocumentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
