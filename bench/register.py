"""The person register at scale: import, a replica's view of it, and decisions over it.

    python -m bench.register                        # 100,000 entries, both backends
    python -m bench.register --entries 1000000
    python -m bench.register --backend sqlite --entries 1000   # a smoke run

Per backend (PostgreSQL: a throwaway initdb/pg_ctl server), on a register of N
entries over N/2 persons (sealed fields, objections, consents with an end
date; one in ten with no dimensions at all, blanket):
- `accord register import` into a fresh database, again (every row unchanged),
  and `accord register export`;
- a replica's start: a fresh process loads its view of the register (until
  ready), and its RSS once it has;
- register writes through the service (recorded, committed), p50/p99, and how
  long until another replica's view has each;
- the event loop's lag (a 1 ms ticker) while a policy of 1,000 agreements
  recompiles in a thread, while a bulk import runs in a thread and while a
  replica's view takes that import's changes from the feed, as the service
  runs them (with its thread switch interval); and while a thread runs
  bytecode only (this machine's floor);
Then, in memory, the engine: a registered person's decision, cold (not
memoised), at 1,000 and at N entries, against a plain decision; and a person
with one blanket consent against 150 consent-based grants.
Prints tables and a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from app import cli
from app.config import PROJECT_DIR, get_settings
from app.decision.engine import PersonFacts, Question, evaluate
from app.main import SWITCH_INTERVAL_SECONDS
from app.policy.agreements import Agreement, parse_agreement
from app.policy.compiler import compile_policy
from app.policy.files import load_vocabulary
from app.policy.lines import casbin_time
from app.policy.register import NO_ENTRIES as NO
from app.policy.register import Consent, PersonRegister, Restriction, Scope, window_of
from app.policy.vocabulary import Vocabulary, parse_vocabulary
from app.register.service import NewEntry, add_entry, remove_entry
from app.register.transfer import COLUMNS
from app.runtime.collector import collector_paused
from app.runtime.register import LiveRegister
from app.runtime.snapshot import PolicySnapshot
from app.store.database import make_engine, upgrade_schema
from bench.engine import MODEL_TEXT, generate_agreement, generate_vocabulary
from tests.postgres import ThrowawayPostgres

VOCABULARY = PROJECT_DIR / "policies" / "vocabulary.yaml"
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
ALWAYS = window_of(datetime(2026, 1, 1, tzinfo=UTC), None)  # every entry: recorded, no end
EVERYTHING = Scope(None, None, None)  # a blanket entry


def write_entries(path: Path, entries: int, seed: int = 13, prefix: str = "") -> None:
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
            blanket = kind != "sealed" and n % 10 < 3  # no dimensions: covers everything
            recipients = "" if kind == "sealed" or blanket else " ".join(chosen.sample(agencies, 2))
            sealed = " ".join(chosen.sample(fields, chosen.randint(1, 3)))  # categories too
            writer.writerow(
                [
                    f"{prefix}{kind}-{n:08d}",
                    f"P-{chosen.randrange(entries // 2 + 1):08d}",
                    kind,
                    recipients,
                    sealed if kind == "sealed" or (kind == "objection" and not blanket) else "",
                    chosen.choice(purposes) if kind != "sealed" and not blanket else "",
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


def run(
    backend: str, url: str, source: Path, entries: int, scratch: Callable[[], str]
) -> dict[str, object]:
    """The figures on one backend; `scratch` gives a fresh, empty database there."""
    upgrade_schema(url)
    first = _accord(url, "register", "import", str(source), "--actor", "bench")
    again = _accord(url, "register", "import", str(source), "--actor", "bench")
    exported = source.with_name(f"export-{backend}.csv")
    export = _accord(url, "register", "export", str(exported))
    ready = _replica_start(url)
    more = source.with_name(f"more-{backend}.csv")
    write_entries(more, max(entries // 10, 100), seed=29, prefix="more")
    return {
        "backend": backend,
        "entries": entries,
        "import_s": round(first, 2),
        "rows_per_s": round(entries / first),
        "reimport_unchanged_s": round(again, 2),
        "export_s": round(export, 2),
        "export_rows_per_s": round(entries / export),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        **ready,
        **_writes(url),
        **_memory_creep(scratch()),
        **_loop_lag(url, more),
    }


def _replica_start(url: str) -> dict[str, float]:
    """A fresh process loads the register as a replica starts; its time and RSS after."""
    child = subprocess.run(
        [sys.executable, "-m", "bench.register", "--load", url],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    return figures


def _load(url: str) -> None:
    engine = make_engine(url)
    started = time.perf_counter()
    view = LiveRegister(engine, max_lag_seconds=5)
    view.refresh()
    seconds = time.perf_counter() - started
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    print(
        json.dumps(
            {
                "replica_ready_s": round(seconds, 2),
                "rss_ready_mib": round(rss / 2**20),
                "persons": view.persons,
            }
        )
    )


def _writes(url: str, count: int = 200) -> dict[str, float]:
    """Entries recorded one by one through the service, and each seen by another view."""
    engine = make_engine(url)
    other = LiveRegister(engine, max_lag_seconds=5)
    other.refresh()
    vocabulary = load_vocabulary(VOCABULARY)
    write_ms, seen_ms = [], []
    for n in range(count):
        started = time.perf_counter()
        with Session(engine) as session:
            entry = _blanket(f"written-{n}", f"P-written-{n}", "objection")
            add_entry(session, entry=entry, vocabulary=vocabulary, actor="bench")
            session.commit()
        written = time.perf_counter()
        other.refresh()
        assert not other.entries(f"P-written-{n}").empty
        write_ms.append((written - started) * 1000)
        seen_ms.append((time.perf_counter() - started) * 1000)
    engine.dispose()
    return {
        "write_p50_ms": round(statistics.median(write_ms), 2),
        "write_p99_ms": round(_p99(write_ms), 2),
        "write_until_seen_p99_ms": round(_p99(seen_ms), 2),
    }


def _memory_creep(url: str) -> dict[str, float]:
    """A replica's view after 10 register changes and after 1,000 (entries recorded and
    removed again, so the register itself ends where it began): memory traced by Python.

    On a register of its own (what a change leaves behind does not depend on the
    register's size, and tracing a million entries' load would take minutes).
    """
    upgrade_schema(url)
    engine = make_engine(url)
    view = LiveRegister(engine, max_lag_seconds=5)
    view.refresh()
    vocabulary = load_vocabulary(VOCABULARY)

    def change(n: int) -> None:
        with Session(engine) as session:
            if n % 2 == 0:
                entry = _blanket(f"creep-{n}", f"P-creep-{n % 7}", "consent")
                add_entry(session, entry=entry, vocabulary=vocabulary, actor="bench")
            else:
                remove_entry(session, entry_id=f"creep-{n - 1}", actor="bench")
            session.commit()
        view.refresh()

    gc.collect()
    tracemalloc.start()
    for n in range(10):
        change(n)
    gc.collect()
    after_10 = tracemalloc.get_traced_memory()[0]
    for n in range(10, 1000):
        change(n)
    gc.collect()
    after_1000 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    engine.dispose()
    return {
        "traced_kib_after_10_changes": round(after_10 / 1024, 1),
        "traced_kib_after_1000_changes": round(after_1000 / 1024, 1),
    }


def _blanket(entry_id: str, person_id: str, kind: str) -> NewEntry:
    """An entry with no dimensions, as a register write of the benchmark."""
    return NewEntry(entry_id, person_id, kind, None, None, None, reason="bench", until=None)


def _p99(samples: list[float]) -> float:
    return sorted(samples)[max(0, int(len(samples) * 0.99) - 1)]


def _loop_lag(url: str, more: Path) -> dict[str, float]:
    """The most a 1 ms asyncio ticker was late while work ran in a thread, with the
    service's thread switch interval; and, as this machine's floor, while a thread only
    ran Python bytecode."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    rng = random.Random(5)
    vocabulary = parse_vocabulary(generate_vocabulary(rng))
    agreements = [
        parse_agreement(generate_agreement(n, vocabulary, rng), vocabulary, version=1)
        for n in range(1000)
    ]

    def recompile() -> None:
        with collector_paused():
            PolicySnapshot.of(
                compile_policy(
                    revision=1, vocabulary=vocabulary, agreements=agreements, model_text=MODEL_TEXT
                )
            )

    def bulk_import() -> None:
        _accord(url, "register", "import", str(more), "--actor", "bench")

    def bytecode_only() -> None:
        ends = time.perf_counter() + 5
        counts: dict[int, int] = {}
        while time.perf_counter() < ends:
            for n in range(1000):
                counts[n] = counts.get(n, 0) + 1

    view = LiveRegister(make_engine(url), max_lag_seconds=5)
    view.refresh()  # a serving replica's view, before the import
    return {
        "loop_lag_floor_max_ms": round(asyncio.run(_lag_while(bytecode_only)), 2),
        "loop_lag_reload_max_ms": round(asyncio.run(_lag_while(recompile)), 2),
        "loop_lag_import_max_ms": round(asyncio.run(_lag_while(bulk_import)), 2),
        # the replica's view takes the import's changes from the feed
        "loop_lag_catch_up_max_ms": round(asyncio.run(_lag_while(view.refresh)), 2),
    }


async def _lag_while(work: Callable[[], None]) -> float:
    done = asyncio.Event()
    worst = 0.0

    async def tick() -> None:
        nonlocal worst
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, (time.perf_counter() - before - 0.001) * 1000)

    ticker = asyncio.create_task(tick())
    await asyncio.to_thread(work)
    done.set()
    await ticker
    return worst


def engine_figures(entries: int) -> dict[str, float]:
    """A registered person's decision, cold, at 1,000 and at `entries` entries."""
    rng = random.Random(3)
    vocabulary = parse_vocabulary(generate_vocabulary(rng))
    documents = [generate_agreement(n, vocabulary, rng) for n in range(1000)]
    for document in documents[:150]:  # 150 consent-based grants
        document["grants"][0]["requires_consent"] = True
    agreements = [parse_agreement(d, vocabulary, version=1) for d in documents]
    policy = compile_policy(
        revision=1, vocabulary=vocabulary, agreements=agreements, model_text=MODEL_TEXT
    )
    snapshot = PolicySnapshot.of(policy)
    questions = _questions(agreements, vocabulary, rng)

    def p50(register: dict[str, PersonRegister], persons: list[str]) -> float:
        samples = []
        for index, (question, age) in enumerate(questions):
            asked = replace(question, person_id=persons[index % len(persons)])
            facts = PersonFacts(asked.person_id, age, register=register.get(asked.person_id, NO))
            memo = snapshot.memo if facts.register.empty else None
            began = time.perf_counter_ns()
            evaluate(policy, asked, facts, NOW, enforcer=snapshot.enforcer, memo=memo)
            samples.append(time.perf_counter_ns() - began)
            if memo is not None:  # cold: a plain question is not answered from the memo
                memo.at(casbin_time(NOW)).clear()
        return statistics.median(samples) / 1000

    figures: dict[str, float] = {"plain_p50_us": round(p50({}, ["P-nobody"]), 1)}
    for size in (1000, entries):
        register = _register(size, vocabulary, rng)
        figures[f"registered_p50_us_{size}"] = round(p50(register, sorted(register)), 1)
        del register
        gc.collect()
    consent = Consent("c-27", "P-27", EVERYTHING, ALWAYS)
    blanket = {"P-27": PersonRegister(consents=(consent,))}
    figures["blanket_consent_p50_us"] = round(p50(blanket, ["P-27"]), 1)
    return figures


def _questions(
    agreements: list[Agreement], vocabulary: Vocabulary, rng: random.Random
) -> list[tuple[Question, int | None]]:
    """Questions between parties that share an agreement, on fields its first grant covers
    (a consent-based one for the first 150 agreements)."""
    asked = []
    for _ in range(4000):
        agreement = rng.choice(agreements)
        grant = agreement.grants[0]
        asked.append(
            (
                Question(
                    rng.choice(sorted(vocabulary.expand_agencies(agreement.recipients))),
                    rng.choice(sorted(vocabulary.expand_agencies(agreement.providers))),
                    "",
                    rng.choice(sorted(vocabulary.fields.leaves_below[grant.fields[0]])),
                    rng.choice(sorted(vocabulary.purposes.descendants[grant.purposes[0]])),
                    rng.random() < 0.2,
                ),
                rng.choice([None, 9, 40]),
            )
        )
    return asked


def _register(
    entries: int, vocabulary: Vocabulary, rng: random.Random
) -> dict[str, PersonRegister]:
    """`entries` entries over entries/2 persons, as a replica's view holds them."""
    agencies = sorted(vocabulary.agencies)
    fields = list(vocabulary.fields.names)
    by_person: dict[str, tuple[list[Restriction], list[Consent]]] = {}
    for n in range(entries):
        person = f"P-{rng.randrange(entries // 2 + 1)}"
        restrictions, consents = by_person.setdefault(person, ([], []))
        blanket = n % 10 < 3
        scope = EVERYTHING if blanket else Scope((rng.choice(agencies),), None, None)
        if n % 3 == 0:
            seal = Scope(None, tuple(rng.sample(fields, 2)), None)
            restrictions.append(Restriction(f"s-{n}", person, "sealed", seal, ALWAYS))
        elif n % 3 == 1:
            restrictions.append(Restriction(f"o-{n}", person, "objection", scope, ALWAYS))
        else:
            consents.append(Consent(f"c-{n}", person, scope, ALWAYS))
    return {
        person: PersonRegister(tuple(restrictions), tuple(consents))
        for person, (restrictions, consents) in by_person.items()
    }


@contextlib.contextmanager
def _postgres() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument(
        "--backend", choices=["sqlite", "postgresql", "both"], default="both", help="default: both"
    )
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)  # the replica child
    args = parser.parse_args()
    if args.load:
        _load(args.load)
        return
    folder = Path(tempfile.mkdtemp(prefix="accord-register-bench-"))
    try:
        source = folder / "register.csv"
        write_entries(source, args.entries)
        results = []
        if args.backend in ("sqlite", "both"):
            url = f"sqlite:///{folder / 'register.db'}"
            results.append(
                run(
                    "sqlite",
                    url,
                    source,
                    args.entries,
                    lambda: f"sqlite:///{folder / 'scratch.db'}",
                )
            )
        if args.backend in ("postgresql", "both"):
            with _postgres() as server:
                url = server.new_database()
                results.append(run("postgresql", url, source, args.entries, server.new_database))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for row in results:
        print("  ".join(f"{key}={value}" for key, value in row.items()))
    engine = engine_figures(args.entries)
    print("  ".join(f"{key}={value}" for key, value in engine.items()))
    print(json.dumps({"register": results, "engine": engine}))


if __name__ == "__main__":
    main()
