"""Impact before activation (issue 16), on the shared Blackpool scenario: every tuple an
impact report lists changes as it says when `simulate` is asked before and after the change,
and the report lists nothing that does not change."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from app.decision.impact import Reach, assess, proposed, reach
from app.policy.agreements import parse_agreement
from app.policy.compiler import compile_policy, with_agreement
from app.policy.files import agreement_documents, load_vocabulary
from app.runtime.snapshot import PolicySnapshot
from tests.conftest import REPO, SCENARIO, ScenarioService, load_yaml

DOCUMENTS = {  # as JSON has them (dates as text)
    document["id"]: json.loads(json.dumps(document, default=str))
    for _, document in agreement_documents(SCENARIO / "agreements")
}
MODEL = (REPO / "policies" / "model.conf").read_text(encoding="utf-8")


def _impact(service: ScenarioService, agreement_id: str, **body: Any) -> dict[str, Any]:
    response = service.server.post(f"/v1/agreements/{agreement_id}/impact", json=body)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def _flows(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**flow, "holder": g["holder"], "requester": g["requester"], "purpose": g["purpose"]}
        for g in groups
        for flow in g["flows"]
    ]


def _simulated(
    service: ScenarioService, flow: dict[str, Any], draft: dict[str, Any] | None
) -> dict[str, Any]:
    """The simulated answer to the flow's question, for a person who meets its condition."""
    age = flow["min_age"] if flow["min_age"] is not None else flow["max_age"]
    body: dict[str, Any] = {
        "request": {
            "requester": flow["requester"],
            "holder": flow["holder"],
            "subject": {"id": "P-IMPACT", "attributes": {} if age is None else {"age": age}},
            "fields": [flow["field"]],
            "purpose": flow["purpose"],
        }
    }
    if flow["condition"] == "break-glass-only":
        body["request"]["context"] = {"emergency": True, "justification": "impact check"}
    if draft is not None:
        body["agreement"] = draft
    response = service.server.post("/v1/simulate", json=body)
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()["decisions"][0]
    return decision


def _access(decision: dict[str, Any], condition: str) -> bool:
    """Whether the answer gives the flow's kind of access."""
    if condition == "with-consent":
        return any(route["kind"] == "consent" for route in decision["routes"])
    return bool(decision["decision"] == "permit")


def test_activating_a_draft_grants_what_simulate_then_permits(
    scenario_service: ScenarioService,
) -> None:
    report = _impact(scenario_service, "isa-health-schools-draft", action="activate")
    granted = _flows(report["granted"])
    assert report["removed"] == [] and granted
    assert {(f["requester"], f["field"], f["purpose"], f["condition"]) for f in granted} == {
        ("edu.blackpool-schools", "health.physical", "safeguarding.children", "outright")
    }
    holders = {flow["holder"] for flow in granted}
    vocabulary = load_yaml(SCENARIO / "vocabulary.yaml")
    health = {a["id"] for a in vocabulary["agencies"] if "health" in a.get("groups", [])}
    assert holders == health
    for flow in granted:
        assert flow["data_class"] == "special-category" and flow["flagged"] is True
        assert flow["lawful_basis"] == "article9: health-or-social-care"
    draft = {**DOCUMENTS["isa-health-schools-draft"], "status": "active"}
    for flow in granted:
        assert not _access(_simulated(scenario_service, flow, None), flow["condition"]), flow
        assert _access(_simulated(scenario_service, flow, draft), flow["condition"]), flow


def test_a_new_version_lists_exactly_what_it_adds_and_removes(
    scenario_service: ScenarioService,
) -> None:
    mash = DOCUMENTS["isa-blackpool-mash"]
    [grant] = mash["grants"]
    fields = [f for f in grant["fields"] if f != "criminal.arrests"] + ["criminal.intelligence"]
    document = {**mash, "grants": [{**grant, "fields": fields}]}
    report = _impact(scenario_service, "isa-blackpool-mash", action="version", document=document)
    granted, removed = _flows(report["granted"]), _flows(report["removed"])
    assert {f["field"] for f in granted} == {"criminal.intelligence"}
    assert {f["field"] for f in removed} == {"criminal.arrests"}
    for flow in granted + removed:
        assert (flow["condition"], flow["max_age"]) == ("within-age-bounds", 17)
        assert flow["data_class"] == "criminal-offence" and flow["flagged"]
        assert flow["lawful_basis"].startswith("article10: ")
    for flow in granted:
        assert not _access(_simulated(scenario_service, flow, None), flow["condition"])
        assert _access(_simulated(scenario_service, flow, document), flow["condition"])
    for flow in removed:
        assert _access(_simulated(scenario_service, flow, None), flow["condition"])
        assert not _access(_simulated(scenario_service, flow, document), flow["condition"])


def test_suspending_removes_what_was_permitted_and_revoked_cannot_change(
    scenario_service: ScenarioService,
) -> None:
    report = _impact(scenario_service, "isa-early-help", action="suspend")
    removed = _flows(report["removed"])
    assert report["granted"] == [] and removed
    assert {flow["condition"] for flow in removed} == {"with-consent"}
    for flow in removed:
        assert _access(_simulated(scenario_service, flow, None), flow["condition"])
    assert (
        scenario_service.server.post(
            "/v1/agreements/isa-early-help/impact", json={"action": "version"}
        ).status_code
        == 422
    )
    assert (
        scenario_service.server.post(
            "/v1/agreements/no-such-agreement/impact", json={"action": "activate"}
        ).status_code
        == 404
    )


@pytest.mark.parametrize("agreement_id", sorted(DOCUMENTS))
@pytest.mark.parametrize("action", ["activate", "suspend"])
def test_the_reach_of_a_change_is_all_it_can_change(agreement_id: str, action: str) -> None:
    """The report compares only the fields and purposes the agreement covers; comparing the
    whole vocabulary for its pairs finds exactly the same."""
    vocabulary = load_vocabulary(SCENARIO / "vocabulary.yaml")
    agreements = [parse_agreement(doc, vocabulary) for doc in DOCUMENTS.values()]
    before = compile_policy(
        revision=1, vocabulary=vocabulary, agreements=agreements, model_text=MODEL
    )
    changed = proposed(before, agreement_id, action, None)  # type: ignore[arg-type]
    after = with_agreement(before, changed)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    enforcer = PolicySnapshot.of(before, memoise=False).enforcer
    reached = reach((before, after), agreement_id)
    whole = Reach(reached.pairs, vocabulary.fields.leaves(), vocabulary.purposes.leaves())
    kwargs: dict[str, Any] = {"agreement_id": agreement_id, "action": action, "now": now}
    assert assess(before, after, enforcer=enforcer, **kwargs) == assess(
        before, after, enforcer=enforcer, scope=whole, **kwargs
    )
