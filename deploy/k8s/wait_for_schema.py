"""Hold a replica's pod until the database schema is the one its image expects.

The Deployment's init container (deployment.yaml), mounted from the ConfigMap that
kustomization.yaml generates from this file. `kubectl apply -k deploy/k8s` creates
the migration Job and rolls the Deployment at the same time; a replica must not
serve on a schema older than its code (docs/operations.md, "Migrations"), so its
pod waits here until the Job's `accord db upgrade` has brought the database to the
head revision of the migrations shipped in the same image. Old replicas keep
serving meanwhile (the rollout never takes one down before a new one is ready).

Exit 0 once the database is at that head. With --timeout, exit 1 if it is not by
then; without it, wait as long as the pod lives. It reads ACCORD_DATABASE_URL as
the app does, never prints it (it holds a password), and changes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from app.config import PROJECT_DIR, Settings


def main() -> int:
    parser = argparse.ArgumentParser(description="wait until the schema is at this image's head")
    parser.add_argument("--timeout", type=float, help="give up after SECONDS (default: never)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between checks")
    args = parser.parse_args()

    script = ScriptDirectory(str(PROJECT_DIR / "migrations"))
    heads = set(script.get_heads())
    known = {revision.revision for revision in script.walk_revisions()}
    wanted = ", ".join(sorted(heads))
    engine = create_engine(Settings().database_url, pool_pre_ping=True)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    said = ""
    while True:
        try:
            with engine.connect() as connection:
                current = set(MigrationContext.configure(connection).get_current_heads())
        except SQLAlchemyError as exc:  # its text may name the host: the class only
            state = f"database unreachable ({type(exc).__name__}); waiting"
        else:
            at = ", ".join(sorted(current)) or "no schema"
            if current == heads:
                print(f"database schema at {wanted}, this image's head: starting", flush=True)
                return 0
            if current - known:
                state = (
                    f"database schema at {at}, which this image's migrations do not know "
                    "(a newer release migrated it?); waiting"
                )
            else:
                state = (
                    f"database schema at {at}, this image needs {wanted}; waiting for the "
                    "migration Job (`accord db upgrade`)"
                )
        if state != said:  # one line per change, not one per poll
            print(state, flush=True)
            said = state
        if deadline is not None and time.monotonic() >= deadline:
            print(f"gave up after {args.timeout:g} s: {state}", file=sys.stderr, flush=True)
            return 1
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
