"""What the audit row records beyond the decision itself (issue 15): a permit's obligations,
chained (chain format 2), in the answer, the row, both exports and the subject-access
report; and rows of chain format 1, written before obligations were recorded, still
verify beside the new ones."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select, text, update

from app.audit.chain import GENESIS, ChainHead
from app.audit.integrity import read_head, verify_chain
from app.audit.record import AuditRecord
from app.store.tables import AuditChainHead, AuditDecision
from tests.audit_rows import write_rows
from tests.conftest import AUDIT_SIGNER, REPO, Server, import_agreements_from

DISCHARGE = {  # the sample's discharge agreement masks an address to its district
    "requester": "housing.riverton-homes",
    "holder": "nhs.riverton-hospital",
    "subject": {"id": "P-2001", "attributes": {"age": 70}},
    "field": "contact.address",
    "purpose": "direct-care.discharge",
    "context": {"user": "hsg.patel", "case_ref": "DIS-9"},
}
MASKED = [{"field": "contact.address", "mask": "postcode-district"}]


def test_a_permits_obligations_are_in_its_answer_row_exports_and_report(
    database_url: str, server_factory: Callable[[dict[str, str]], Server]
) -> None:
    env = {"ACCORD_DATABASE_URL": database_url}
    import_agreements_from(env, REPO / "policies" / "agreements")
    server = server_factory(env)
    answer = server.post("/v1/decisions", json=DISCHARGE).json()
    assert answer["decision"] == "permit" and answer["obligations"] == MASKED
    plain = server.post("/v1/decisions", json={**DISCHARGE, "field": "identity.name"}).json()
    assert plain["decision"] == "permit" and plain["obligations"] == []

    row = server.get(f"/v1/audit/decisions/{answer['decision_id']}").json()
    assert (row["obligations"], row["chain_version"]) == (MASKED, 2)
    assert server.get(f"/v1/audit/decisions/{plain['decision_id']}").json()["obligations"] == []

    ndjson = server.get(
        "/v1/audit/decisions/export", params={"format": "ndjson", "person": "P-2001"}
    )
    by_id = {line["decision_id"]: line for line in map(json.loads, ndjson.text.splitlines())}
    assert by_id[answer["decision_id"]]["obligations"] == MASKED
    exported = server.get(
        "/v1/audit/decisions/export", params={"format": "csv", "person": "P-2001"}
    )
    cells = {r["decision_id"]: r for r in csv.DictReader(io.StringIO(exported.text))}
    assert cells[answer["decision_id"]]["obligations"] == "contact.address=postcode-district"
    assert cells[plain["decision_id"]]["obligations"] == ""

    report = server.get("/v1/audit/subject-access/P-2001").json()
    [group] = report["groups"]
    items = {item["decision_id"]: item for item in group["items"]}
    assert items[answer["decision_id"]]["obligations"] == MASKED
    assert server.get("/v1/audit/verify").json()["intact"] is True


def _format_1_rows(engine: Engine, count: int) -> None:
    """Rows as a writer before migration 0008 chained them: no obligations, format 1, the
    hash over the first format's columns (migration 0003 keeps that function frozen)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "m0003", REPO / "migrations" / "versions" / "2026_11_25_0003_audit_chain.py"
    )
    assert spec is not None and spec.loader is not None
    frozen: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(frozen)
    previous, rows = GENESIS, []
    for seq in range(1, count + 1):
        row = {
            "seq": seq,
            "decision_id": f"00000000-0000-4000-8000-{seq:012d}",
            "request_id": f"old-{seq}",
            "decided_at": datetime(2026, 1, 1, tzinfo=UTC),
            "client": "old-client",
            "requester": "police.riverton",
            "holder": "la.riverton.childrens-services",
            "person_id": "P-OLD",
            "field": "identity.name",
            "purpose": "safeguarding.children",
            "decision": "permit",
            "reason": "agreement",
            "agreement_id": "isa-riverton-mash",
            "agreement_version": 1,
            "restriction_id": None,
            "consent_id": None,
            "break_glass": False,
            "justification": None,
            "user_ref": None,
            "case_ref": None,
            "policy_revision": 1,
        }
        row["prev_hash"] = previous
        row["row_hash"] = previous = frozen.row_hash(previous, row)
        rows.append(row)
    with engine.begin() as connection:
        connection.execute(insert(AuditDecision), rows)  # chain_version: its default, 1
        connection.execute(update(AuditChainHead).values(last_seq=count, last_hash=previous))


def _broken(engine: Engine) -> str | None:
    with engine.connect() as connection:
        result = verify_chain(connection, AUDIT_SIGNER.keyring())
    return None if result.broken is None else result.broken.problem


def test_rows_of_chain_format_1_still_verify_beside_format_2(engine: Engine) -> None:
    _format_1_rows(engine, 5)
    write_rows(engine, [datetime.now(UTC)] * 5)  # the writer goes on in format 2
    with engine.connect() as connection:
        versions = connection.scalars(select(AuditDecision.chain_version).order_by("seq")).all()
        head = read_head(connection)
    assert versions == [1] * 5 + [2] * 5
    assert head == ChainHead(10, head.hash, head.signature) and head.signature
    assert _broken(engine) is None

    # Obligations slipped into a format-1 row (whose hash would not cover them): a break.
    if engine.dialect.name == "postgresql":  # an owner switches the append-only guard off
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE audit_decisions DISABLE TRIGGER USER"))
    with engine.begin() as connection:
        connection.execute(
            update(AuditDecision).where(AuditDecision.seq == 3).values(obligations=MASKED)
        )
    assert _broken(engine) == "it holds values that its chain format version 1 does not cover"
    # A format-2 row passed off as format 1 (so obligations would escape the hash): a break.
    with engine.begin() as connection:
        connection.execute(
            update(AuditDecision).where(AuditDecision.seq == 3).values(obligations=None)
        )
        connection.execute(
            update(AuditDecision).where(AuditDecision.seq == 8).values(chain_version=1)
        )
    assert _broken(engine) == "its chain format version 1 is older than the row before it"


def test_every_row_the_decision_path_writes_is_an_audit_record_field_for_field(
    database_url: str, engine: Engine, server_factory: Callable[[dict[str, str]], Server]
) -> None:
    """The decision path builds its rows as plain dicts (app/decision/service.py): each row
    in the table holds exactly what the answer said, in AuditRecord's types (a reason is
    its code, not an enum's name), for permits, denies with routes and masked permits."""
    env = {"ACCORD_DATABASE_URL": database_url}
    import_agreements_from(env, REPO / "policies" / "agreements")
    server = server_factory(env)
    batch = {k: v for k, v in DISCHARGE.items() if k != "field"} | {"fields": "*"}
    answer = server.post("/v1/decisions/batch", json=batch).json()
    decisions = {d["decision_id"]: d for d in answer["decisions"]}
    assert {d["decision"] for d in decisions.values()} == {"permit", "deny"}
    with engine.connect() as connection:
        rows = connection.execute(
            select(AuditDecision).where(AuditDecision.decision_id.in_(decisions))
        ).all()
    assert len(rows) == len(decisions)
    for row in rows:
        stored = AuditRecord.model_validate(row._asdict(), strict=True)
        said = decisions[stored.decision_id]
        assert (stored.field, stored.decision, stored.reason) == (
            said["field"],
            said["decision"],
            said["reasons"][0]["code"],
        )
        assert type(stored.reason) is str and stored.obligations == said["obligations"]
        assert stored.routes_offered == [route["kind"] for route in said["routes"]]
        assert (stored.person_id, stored.requester, stored.user_ref, stored.case_ref) == (
            "P-2001",
            DISCHARGE["requester"],
            "hsg.patel",
            "DIS-9",
        )
