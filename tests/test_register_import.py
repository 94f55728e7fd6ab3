"""Bulk import and export of the person register: the CLI and the HTTP API of a real server.

The shared scenario's register, written as CSV and as NDJSON, is imported through
the API and the scenario's register cases must then get their expected answers.
A bad file names every bad row and stores nothing; a re-import of the same rows
changes nothing; a changed row is refused unless replaced; every import is one
change record; an export imported into an empty database gives the same register.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.policy.register import PersonRegister
from app.register.service import load_register, remove_entry
from app.register.transfer import COLUMNS
from app.store.database import make_engine, upgrade_schema
from app.store.revisions import POLICY, REGISTER, read_revision
from app.store.tables import ChangeRecord, RegisterEntry
from tests.conftest import (
    SCENARIO,
    Backend,
    Server,
    accord,
    create_key,
    load_yaml,
    scenario_env,
    start_server,
    wait_until,
)

SCENARIO_CASES = load_yaml(SCENARIO / "cases.yaml")
REGISTER_PERSONS = {
    entry["person"]
    for kind in ("restrictions", "consents")
    for entry in SCENARIO_CASES["register"][kind]
}
REGISTER_CASES = [
    case
    for case in SCENARIO_CASES["cases"]
    if case["request"]["subject"]["id"] in REGISTER_PERSONS and "status" not in case["expect"]
]
MEDIA = {"csv": "text/csv", "ndjson": "application/x-ndjson"}

pytestmark = pytest.mark.slow  # the `accord` command and `accord serve` processes


# --- files -----------------------------------------------------------------------------


def scenario_rows() -> list[dict[str, Any]]:
    """cases.yaml's register as import rows."""
    register = SCENARIO_CASES["register"]
    rows = [{**entry, "reason": "scenario register"} for entry in register["restrictions"]]
    rows += [
        {**entry, "kind": "consent", "reason": "scenario register"}
        for entry in register["consents"]
    ]
    return [
        {key: value.isoformat() if isinstance(value, date) else value for key, value in row.items()}
        for row in rows
    ]


def to_csv(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append(" ".join(value) if isinstance(value, list) else value or "")
        writer.writerow(cells)
    return buffer.getvalue()


def to_ndjson(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def entry(
    entry_id: str, person: str = "P-9", kind: str = "objection", **extra: Any
) -> dict[str, Any]:
    return {"id": entry_id, "person": person, "kind": kind, "reason": "letter", **extra}


# --- the database ----------------------------------------------------------------------


def entry_count(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(RegisterEntry)) or 0)


def imports(engine: Engine) -> list[ChangeRecord]:
    with Session(engine) as session:
        query = select(ChangeRecord).where(ChangeRecord.action == "register.import")
        return list(session.scalars(query.order_by(ChangeRecord.seq)))


def revision(engine: Engine) -> int:
    """The register feed's position: it moves by one for each entry written."""
    with engine.connect() as connection:
        return read_revision(connection, REGISTER)


def policy_revision(engine: Engine) -> int:
    with engine.connect() as connection:
        return read_revision(connection, POLICY)


def register_of(engine: Engine) -> dict[str, PersonRegister]:
    """load_register, with the time each entry was recorded set aside (an import records anew)."""
    with Session(engine) as session:
        register = load_register(session)

    def undated(entry: Any) -> Any:
        return dataclasses.replace(entry, window=("recorded", entry.window[1]))

    return {
        person: PersonRegister(
            tuple(undated(r) for r in entries.restrictions),
            tuple(undated(c) for c in entries.consents),
        )
        for person, entries in register.by_person.items()
    }


# --- through the HTTP API: the scenario's register cases --------------------------------


@pytest.fixture(scope="module", params=["csv", "ndjson"])
def imported_service(
    request: pytest.FixtureRequest, backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Engine, str]]:
    """The scenario's agreements, and its register imported as one file: CSV with
    `accord register import` while the server runs, NDJSON through the API."""
    fmt: str = request.param
    url = backend.new_database()
    upgrade_schema(url)
    env = {**scenario_env(url), "ACCORD_MAX_BODY_BYTES": "1024", "ACCORD_MAX_IMPORT_BYTES": "65536"}
    accord("agreements", "import", str(SCENARIO / "agreements"), env=env)
    server = start_server(env, tmp_path_factory.mktemp(f"import-{fmt}"))
    engine = make_engine(url)
    try:
        rows = scenario_rows()
        # Larger than ACCORD_MAX_BODY_BYTES: an import has its own bound.
        rows += [entry(f"pad-{n}", person=f"P-PAD-{n}") for n in range(40)]
        text = to_csv(rows) if fmt == "csv" else to_ndjson(rows)
        assert len(text.encode()) > 1024
        if fmt == "csv":  # with the command, beside the running server: it follows the feed
            path = tmp_path_factory.mktemp("files") / "register.csv"
            path.write_text(text, encoding="utf-8")
            done = accord("register", "import", str(path), env=env)
            assert f"{len(rows)} added, 0 replaced, 0 unchanged" in done.stdout
            assert wait_until(
                lambda: server.get("/readyz").json().get("register_seq") == len(rows), 5.0
            ), "the server did not take the imported entries from the register feed"
        else:  # over the API
            response = server.post(
                "/v1/register/import", content=text.encode(), headers={"content-type": MEDIA[fmt]}
            )
            assert response.status_code == 200, response.text
            result = response.json()
            assert (result["format"], result["rows"]) == (fmt, len(rows))
            assert (result["added"], result["replaced"], result["unchanged"]) == (len(rows), 0, 0)
        yield server, engine, fmt
    finally:
        server.stop()
        engine.dispose()


def auditor_key(server: Server, client_id: str) -> str:
    """A key with the `audit` scope only, once the server knows it."""
    key = create_key(server.env, client_id, scopes="audit", agencies="police.lancashire")
    known = wait_until(
        lambda: server.get("/v1/register", key=key, params={"person": "P-1"}).status_code == 200,
        seconds=10,
    )
    assert known, "the server never took the new key"
    return key


@pytest.mark.parametrize("case", REGISTER_CASES, ids=[case["name"] for case in REGISTER_CASES])
def test_imported_register_decides_the_scenario_cases(
    imported_service: tuple[Server, Engine, str], case: dict[str, Any]
) -> None:
    server, _, _ = imported_service
    body = {key: value for key, value in case["request"].items()}
    body.setdefault("context", {})
    response = server.post("/v1/decisions", json=body)
    assert response.status_code == 200, response.text
    answer, expect = response.json(), case["expect"]
    reason = answer["reasons"][0]
    assert (answer["decision"], reason["code"]) == (expect["decision"], expect["reason"])
    if "restriction" in expect:
        assert reason["restriction_id"] == expect["restriction"]
    if "agreement" in expect:
        assert reason["agreement_id"] == expect["agreement"]
    assert answer["break_glass"] is expect.get("break_glass", False)
    overridden = [
        r["restriction_id"] for r in answer["reasons"] if r["code"] == "objection-overridden"
    ]
    assert overridden == ([expect["overridden"]] if "overridden" in expect else [])


def test_the_register_cases_cover_every_kind_of_entry() -> None:
    names = {case["expect"].get("restriction") for case in REGISTER_CASES}
    assert {"r-sealed-address", "r-objection-health", "r-objection-early-help"} <= names
    persons = {case["request"]["subject"]["id"] for case in REGISTER_CASES}
    assert {"P-102", "P-201", "P-301", "P-302", "P-304"} <= persons


def test_api_import_names_every_bad_row_and_stores_nothing(
    imported_service: tuple[Server, Engine, str],
) -> None:
    server, engine, fmt = imported_service
    before, records = entry_count(engine), len(imports(engine))
    rows = [
        entry("api-ok-1"),
        entry("api-bad-1", fields=["health.x"]),
        entry("api-bad-2", kind="sealed"),
        entry("api-ok-1"),
    ]
    text = to_csv(rows) if fmt == "csv" else to_ndjson(rows)
    response = server.post(
        "/v1/register/import", content=text.encode(), headers={"content-type": MEDIA[fmt]}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    first = 2 if fmt == "csv" else 1  # the CSV header is line 1
    assert problem["invalid_params"] == [
        {"name": f"line {first + 1}: fields", "reason": "unknown field 'health.x'"},
        {
            "name": f"line {first + 2}: fields",
            "reason": "a sealed restriction must name the fields it seals",
        },
        {
            "name": f"line {first + 3}: id",
            "reason": f"duplicate id 'api-ok-1' (first on line {first})",
        },
    ]
    assert "nothing stored" in problem["detail"]
    assert (entry_count(engine), len(imports(engine))) == (before, records)


def test_api_import_refuses_other_media_a_body_too_large_and_callers_without_manage(
    imported_service: tuple[Server, Engine, str],
) -> None:
    server, engine, fmt = imported_service
    wrong = server.post("/v1/register/import", json=[entry("api-json")])
    assert wrong.status_code == 415, wrong.text
    assert wrong.headers["content-type"] == "application/problem+json"
    big = to_csv([entry(f"big-{n}", reason="x" * 500) for n in range(200)])
    too_large = server.post(
        "/v1/register/import", content=big.encode(), headers={"content-type": "text/csv"}
    )
    assert too_large.status_code == 413, too_large.text
    auditor = auditor_key(server, f"auditor-{fmt}")
    small = to_csv([entry("api-auditor")]).encode()
    refused = server.post(
        "/v1/register/import", key=auditor, content=small, headers={"content-type": "text/csv"}
    )
    assert refused.status_code == 403, refused.text
    assert imports(engine)[-1].after is not None
    assert all("api-auditor" not in (record.after or {}) for record in imports(engine))
    with Session(engine) as session:
        assert session.get(RegisterEntry, "api-auditor") is None


def test_api_export_streams_the_live_register_for_an_auditor(
    imported_service: tuple[Server, Engine, str],
) -> None:
    server, engine, fmt = imported_service
    auditor = auditor_key(server, f"exporter-{fmt}")
    with httpx.stream(
        "GET",
        f"{server.url}/v1/register/export",
        params={"format": fmt},
        headers={"authorization": f"Bearer {auditor}"},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(MEDIA[fmt])
        text = b"".join(response.iter_bytes()).decode()
    if fmt == "csv":
        records = list(csv.DictReader(io.StringIO(text)))
    else:
        records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == entry_count(engine)
    keys = [(record["person"], record["id"]) for record in records]
    assert keys == sorted(keys)
    sealed = next(record for record in records if record["id"] == "r-sealed-address")
    assert sealed["fields"] == ("contact.address" if fmt == "csv" else ["contact.address"])


# --- through the CLI -------------------------------------------------------------------


def test_a_bad_file_names_every_bad_row_and_stores_nothing(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    env = scenario_env(database_url)
    accord("register", "import", str(write(tmp_path, "seed.csv", to_csv([entry("gone")]))), env=env)
    with Session(engine) as session:
        remove_entry(session, entry_id="gone", actor="test")
        session.commit()
    stored, records, before = entry_count(engine), len(imports(engine)), revision(engine)
    rows = [
        entry("good-1"),  # line 2: fine, but not stored with the rest
        entry("bad-field", fields=["health.x"]),  # 3
        entry("bad-recipient", recipients=["la.nowhere"]),  # 4
        entry("bad-purpose", purposes=["marketing"]),  # 5
        entry("bad-date", until="2024-02-30"),  # 6
        entry("good-1"),  # 7: duplicate id
        entry("bad-kind", kind="banned"),  # 8
        entry("sealed-bare", kind="sealed"),  # 9
        {"id": "no-person", "kind": "objection", "reason": "letter"},  # 10
        {"id": "no-reason", "person": "P-9", "kind": "objection"},  # 11
        entry("gone"),  # 12: a removed entry's id
        entry("two-bad", kind="consent", purposes=["marketing"], until="soon"),  # 13
    ]
    result = accord(
        "register", "import", str(write(tmp_path, "bad.csv", to_csv(rows))), env=env, check=False
    )
    assert result.returncode == 1, result.stdout
    lines = result.stderr.splitlines()
    assert lines[0] == "import refused: 12 problems in 12 rows, nothing stored"
    assert set(lines[1:]) == {
        "line 3: fields: unknown field 'health.x'",
        "line 4: recipients: unknown agency or group 'la.nowhere'",
        "line 5: purposes: unknown purpose 'marketing'",
        "line 6: until: '2024-02-30' is not a date (YYYY-MM-DD) or a date-time with its offset",
        "line 7: id: duplicate id 'good-1' (first on line 2)",
        "line 8: kind: unknown kind 'banned' (sealed, objection or consent)",
        "line 9: fields: a sealed restriction must name the fields it seals",
        "line 10: person: a value is required",
        "line 11: reason: a value is required",
        "line 12: id: entry 'gone' was removed; a removed entry's id is not reused",
        "line 13: until: 'soon' is not a date (YYYY-MM-DD) or a date-time with its offset",
        "line 13: purposes: unknown purpose 'marketing'",
    }
    assert len(lines) == 13
    assert (entry_count(engine), len(imports(engine)), revision(engine)) == (
        stored,
        records,
        before,
    )


def test_bad_ndjson_lines_and_a_bad_header_are_named(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    env = scenario_env(database_url)
    text = "\n".join(
        [
            json.dumps(entry("fine")),
            "{not json",
            "[1, 2]",
            json.dumps(entry("listless", fields="health")),
            json.dumps({**entry("extra"), "colour": "red"}),
            json.dumps({**entry("nulls"), "person": None, "recipients": None}),
            "",
            json.dumps(entry("empty-list", purposes=[])),
        ]
    )
    result = accord(
        "register", "import", str(write(tmp_path, "bad.jsonl", text)), env=env, check=False
    )
    assert result.returncode == 1
    named = [
        line.split(": ")[0] + ": " + line.split(": ")[1] for line in result.stderr.splitlines()[1:]
    ]
    assert named == [
        "line 2: not JSON",
        "line 3: not a JSON object",
        "line 4: fields",
        "line 5: colour",
        "line 6: person",
        "line 8: purposes",
    ], result.stderr
    assert "line 5: colour: unknown column" in result.stderr
    assert "line 6: person: a value is required" in result.stderr

    header = to_csv([entry("x")], columns=("id", "person", "kind", "colour"))
    result = accord(
        "register", "import", str(write(tmp_path, "header.csv", header)), env=env, check=False
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[1:] == [
        "line 1: colour: unknown column",
        "line 1: reason: missing column",
    ]
    assert entry_count(engine) == 0 and imports(engine) == []


def test_the_problems_listed_are_capped_and_the_rest_counted(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    rows = [entry(f"e-{n}", fields=["health.x"]) for n in range(1500)]
    result = accord(
        "register",
        "import",
        str(write(tmp_path, "many.csv", to_csv(rows))),
        env=scenario_env(database_url),
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "import refused: 1500 problems in 1500 rows, nothing stored"
    assert len(lines) == 1 + 1000 + 1
    assert lines[-1] == "more: 500 more problems not listed"
    assert entry_count(engine) == 0


def test_reimport_unchanged_is_a_no_op_and_a_changed_entry_needs_replace(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    env = scenario_env(database_url)
    rows = scenario_rows()
    first = accord(
        "register",
        "import",
        str(write(tmp_path, "r.csv", to_csv(rows))),
        "--actor",
        "alice",
        env=env,
    )
    assert f"{len(rows)} added, 0 replaced, 0 unchanged" in first.stdout
    after_first = revision(engine)

    again = accord("register", "import", str(write(tmp_path, "r.ndjson", to_ndjson(rows))), env=env)
    assert f"0 added, 0 replaced, {len(rows)} unchanged" in again.stdout
    assert revision(engine) == after_first and len(imports(engine)) == 1

    changed = [dict(row) for row in rows] + [entry("new-one")]
    changed[0]["fields"] = ["contact.address", "contact.phone"]  # line 2
    changed[3]["until"] = "2098-12-31"  # line 5
    path = write(tmp_path, "changed.csv", to_csv(changed))
    refused = accord("register", "import", str(path), env=env, check=False)
    assert refused.returncode == 1
    other = "is stored with other content; replace it to change it"
    assert refused.stderr.splitlines()[1:] == [
        f"line 2: id: entry '{rows[0]['id']}' {other}",
        f"line 5: id: entry '{rows[3]['id']}' {other}",
    ]
    with Session(engine) as session:
        assert session.get(RegisterEntry, "new-one") is None
    assert revision(engine) == after_first

    replaced = accord("register", "import", str(path), "--replace", "--actor", "bob", env=env)
    assert f"1 added, 2 replaced, {len(rows) - 2} unchanged" in replaced.stdout
    assert revision(engine) == after_first + 3  # one added, two replaced
    with Session(engine) as session:
        row = session.get_one(RegisterEntry, rows[0]["id"])
        assert row.fields == ["contact.address", "contact.phone"]
        assert (row.recorded_by, row.removed_at) == ("bob", None)
        assert session.get_one(RegisterEntry, rows[3]["id"]).until == datetime(
            2098, 12, 31, tzinfo=UTC
        )
    first_record, last = imports(engine)
    assert first_record.actor == "alice" and last.actor == "bob"
    assert last.before is not None
    assert last.before["replaced"][rows[0]["id"]]["fields"] == ["contact.address"]
    assert set(last.before["replaced"]) == {rows[0]["id"], rows[3]["id"]}


def test_each_import_is_one_change_record_with_its_digest_and_counts(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    text = to_csv([entry(f"log-{n}", person=f"P-{n}") for n in range(25)])
    path = write(tmp_path, "log.csv", text)
    before, policy_before = revision(engine), policy_revision(engine)
    accord("register", "import", str(path), "--actor", "carol", env=scenario_env(database_url))
    [record] = imports(engine)
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert (record.actor, record.target_type, record.target_id) == ("carol", "register", digest)
    assert record.before is None
    assert record.after == {
        "sha256": digest,
        "format": "csv",
        "rows": 25,
        "added": 25,
        "replaced": 0,
        "unchanged": 0,
    }
    assert revision(engine) == before + 25  # each entry reaches replicas through the feed
    assert policy_revision(engine) == policy_before  # and nothing is compiled
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(ChangeRecord)) == 1


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_export_then_import_into_an_empty_database_gives_the_same_register(
    backend: Backend, database_url: str, engine: Engine, tmp_path: Path, fmt: str
) -> None:
    env = scenario_env(database_url)
    rows = [
        *scenario_rows(),
        entry("quoted", person="P-7", reason='said "no", twice,\nin writing'),
        entry("timed", person="P-7", kind="consent", until="2031-05-06T07:08:09+02:00"),
        entry(
            "all-three",
            person="P-8",
            recipients=["police", "la.blackpool.early-help"],
            fields=["health", "contact.phone"],
            purposes=["early-help"],
        ),
        entry("dropped", person="P-8"),
    ]
    accord("register", "import", str(write(tmp_path, "in.ndjson", to_ndjson(rows))), env=env)
    with Session(engine) as session:
        remove_entry(session, entry_id="dropped", actor="test")
        session.commit()

    exported = tmp_path / f"out.{fmt}"
    accord("register", "export", str(exported), env=env)
    stdout = accord("register", "export", "--format", fmt, env=env).stdout
    assert stdout == exported.read_text(encoding="utf-8")
    assert "dropped" not in stdout

    other_url = backend.new_database()
    upgrade_schema(other_url)
    other = make_engine(other_url)
    try:
        accord("register", "import", str(exported), env=scenario_env(other_url))
        assert register_of(other) == register_of(engine)
        assert entry_count(other) == len(rows) - 1
        again = tmp_path / f"again.{fmt}"
        accord("register", "export", str(again), env=scenario_env(other_url))
        assert again.read_text(encoding="utf-8") == stdout
    finally:
        other.dispose()
