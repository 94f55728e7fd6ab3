"""Register import speed: N entries through `accord register import`, on SQLite and PostgreSQL.

    python -m bench.register_import                        # 100,000 entries, both backends
    python -m bench.register_import --entries 1000000
    python -m bench.register_import --backend sqlite --entries 1000   # a smoke run

Writes a CSV of N entries (sealed fields, objections, consents with an end date,
names from the sample vocabulary), then times the CLI's import into a fresh
database on each backend (the PostgreSQL one a throwaway initdb/pg_ctl server),
a second import of the same file (every row unchanged: the lookups alone) and an
export. The CLI runs in this process, so interpreter start-up is not counted.
Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from app import cli
from app.config import PROJECT_DIR, get_settings
from app.policy.files import load_vocabulary
from app.register.transfer import COLUMNS
from app.store.database import upgrade_schema
from tests.postgres import ThrowawayPostgres

VOCABULARY = PROJECT_DIR / "policies" / "vocabulary.yaml"


def write_entries(path: Path, entries: int, seed: int = 13) -> None:
    """`entries` rows of a register file, deterministic for a seed."""
    vocabulary = load_vocabulary(VOCABULARY)
    agencies = sorted(vocabulary.agencies) + sorted(vocabulary.groups)
    fields = list(vocabulary.fields.names)
    purposes = list(vocabulary.purposes.names)
    chosen = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for n in range(entries):
            kind = ("sealed", "objection", "consent")[n % 3]
            recipients = "" if kind == "sealed" else " ".join(chosen.sample(agencies, 2))
            sealed = " ".join(chosen.sample(fields, chosen.randint(1, 3)))
            writer.writerow(
                [
                    f"{kind}-{n:08d}",
                    f"P-{chosen.randrange(entries // 2 + 1):08d}",
                    kind,
                    recipients,
                    sealed if kind != "consent" else "",
                    chosen.choice(purposes) if kind != "sealed" else "",
                    "2099-01-01" if kind == "consent" else "",
                    f"recorded from case {n}",
                ]
            )


def _accord(url: str, *args: str) -> float:
    """Run an `accord` command in this process on `url`; its seconds."""
    os.environ["ACCORD_DATABASE_URL"] = url
    os.environ["ACCORD_VOCABULARY_FILE"] = str(VOCABULARY)
    get_settings.cache_clear()
    started = time.perf_counter()
    code = cli.main(list(args))
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"accord {' '.join(args)} failed with exit {code}")
    return seconds


def run(backend: str, url: str, source: Path, entries: int) -> dict[str, object]:
    upgrade_schema(url)
    first = _accord(url, "register", "import", str(source), "--actor", "bench")
    again = _accord(url, "register", "import", str(source), "--actor", "bench")
    exported = source.with_name(f"export-{backend}.csv")
    export = _accord(url, "register", "export", str(exported))
    return {
        "backend": backend,
        "entries": entries,
        "import_s": round(first, 2),
        "rows_per_s": round(entries / first),
        "reimport_unchanged_s": round(again, 2),
        "export_s": round(export, 2),
        "export_rows_per_s": round(entries / export),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


@contextlib.contextmanager
def _postgres() -> Iterator[str]:
    server = ThrowawayPostgres()
    server.start()
    try:
        yield server.new_database()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument(
        "--backend", choices=["sqlite", "postgresql", "both"], default="both", help="default: both"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="accord-register-bench-"))
    try:
        source = folder / "register.csv"
        write_entries(source, args.entries)
        results = []
        if args.backend in ("sqlite", "both"):
            url = f"sqlite:///{folder / 'register.db'}"
            results.append(run("sqlite", url, source, args.entries))
        if args.backend in ("postgresql", "both"):
            with _postgres() as url:
                results.append(run("postgresql", url, source, args.entries))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    columns = list(results[0])
    print("  ".join(f"{c:>20}" for c in columns))
    for row in results:
        print("  ".join(f"{row[c]!s:>20}" for c in columns))
    print(json.dumps({"register_import": results}))


if __name__ == "__main__":
    main()
