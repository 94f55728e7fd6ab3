"""The audit export as FHIR R4 for NHS partners (GET /v1/audit/decisions/export?format=fhir):
a searchset Bundle of one AuditEvent a decision, every resource valid by the `fhir.resources`
models of R4B (the R4 models fhir.resources 8 ships: R4B's AuditEvent and Bundle are R4's),
break-glass coded ETREAT/BTG, purposes coded from the vocabulary; and the vocabulary's codes.
"""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from app.audit import fhir
from app.policy.vocabulary import VocabularyError, parse_vocabulary
from tests.conftest import (
    REPO,
    SAMPLE_VOCABULARY,
    Server,
    ServerFactory,
    import_agreements_from,
    load_yaml,
)

EXPORT = "/v1/audit/decisions/export"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CHILDREN, ADULTS = "la.riverton.childrens-services", "la.riverton.adult-services"
HOSPITAL = "nhs.riverton-hospital"
CHILD = {"id": "P-FHIR-1", "attributes": {"age": 12}}
ADULT = {"id": "P-FHIR-2", "attributes": {"age": 80}}
CONTEXT = {"user": "sw.jones", "case_ref": "CP-2026-114"}


@pytest.fixture
def riverton(database_url: str, server_factory: ServerFactory) -> Server:
    """The sample partnership (policies/: its vocabulary codes some purposes), in process."""
    env = {"ACCORD_DATABASE_URL": database_url, "ACCORD_VOCABULARY_FILE": str(SAMPLE_VOCABULARY)}
    import_agreements_from(env, REPO / "policies" / "agreements")
    return server_factory(env)


def _decide(server: Server, **question: Any) -> dict[str, Any]:
    response = server.post("/v1/decisions", json=question)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _export(server: Server, **params: str) -> dict[str, Any]:
    response = server.get(EXPORT, params={"format": "fhir", **params})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/fhir+json; fhirVersion=4.0"
    document: dict[str, Any] = response.json()
    # Every resource is valid FHIR: the Bundle with its entries, and each AuditEvent.
    Bundle.model_validate(document)
    for entry in document.get("entry", []):
        AuditEvent.model_validate(entry["resource"])
    return document


def _events(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["resource"]["id"]: entry["resource"] for entry in document["entry"]}


def _details(event: dict[str, Any]) -> dict[str, str]:
    [_, asked] = event["entity"]
    return {detail["type"]: detail["valueString"] for detail in asked["detail"]}


def _codes(concepts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for concept in concepts for c in concept.get("coding", [])]


@pytest.fixture
def decided(riverton: Server) -> dict[str, dict[str, Any]]:
    """A permit for a coded purpose, a deny, a break-glass permit, a permit with a mask."""
    return {
        "permit": _decide(
            riverton,
            requester=ADULTS,
            holder=HOSPITAL,
            subject=ADULT,
            field="identity.name",
            purpose="direct-care.discharge",
            context=CONTEXT,
        ),
        "deny": _decide(  # the MASH agreement lets health go only by break-glass
            riverton,
            requester=CHILDREN,
            holder=HOSPITAL,
            subject=CHILD,
            field="health.physical",
            purpose="safeguarding.children",
            context=CONTEXT,
        ),
        "break-glass": _decide(
            riverton,
            requester=CHILDREN,
            holder=HOSPITAL,
            subject=CHILD,
            field="health.physical",
            purpose="safeguarding.children",
            context={**CONTEXT, "emergency": True, "justification": "child admitted unconscious"},
        ),
        "masked": _decide(
            riverton,
            requester=ADULTS,
            holder=HOSPITAL,
            subject=ADULT,
            field="contact.address",
            purpose="direct-care.discharge",
        ),
    }


def test_every_decision_is_one_valid_audit_event_in_a_searchset(
    riverton: Server, decided: dict[str, dict[str, Any]]
) -> None:
    assert [answer["decision"] for answer in decided.values()] == [
        "permit",
        "deny",
        "permit",
        "permit",
    ]
    assert decided["break-glass"]["break_glass"] is True
    document = _export(riverton)
    assert document["resourceType"] == "Bundle"
    assert document["type"] == "searchset"
    assert document["link"][0]["relation"] == "self"
    ids = [answer["decision_id"] for answer in decided.values()]
    assert [entry["resource"]["id"] for entry in document["entry"]] == ids  # oldest first
    for entry in document["entry"]:
        assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
        assert entry["search"] == {"mode": "match"}
        event = entry["resource"]
        # The event is the decision: a query answered, whatever the answer.
        assert event["type"]["code"] == "110112"
        assert (event["action"], event["outcome"]) == ("E", "0")
        [person, asked] = event["entity"]
        assert person["what"]["identifier"]["value"] in (CHILD["id"], ADULT["id"])
        assert person["role"]["code"] == "1"  # the patient: the person the data is about
        assert asked["name"] in {"identity.name", "health.physical", "contact.address"}
        assert event["source"]["observer"]["display"].startswith("Accord")


def test_a_permit_and_a_deny_record_the_decision_not_a_failure(
    riverton: Server, decided: dict[str, dict[str, Any]]
) -> None:
    events = _events(_export(riverton))
    permit = events[decided["permit"]["decision_id"]]
    assert permit["outcome"] == "0"
    assert permit["outcomeDesc"] == "permit (agreement); agreement isa-riverton-discharge v1"
    assert permit["recorded"].endswith("Z")
    assert permit["entity"][1]["name"] == "identity.name"
    details = _details(permit)
    assert details["decision"] == "permit"
    assert details["reason"] == "agreement"
    assert details["case_ref"] == "CP-2026-114"
    assert "meta" not in permit and "subtype" not in permit
    requester, user, client, holder = permit["agent"]
    assert requester["who"]["identifier"]["value"] == ADULTS
    assert requester["who"]["display"] == "Riverton Council Adult Social Care"
    assert requester["requestor"] is True
    assert (user["who"]["identifier"]["value"], user["requestor"]) == ("sw.jones", True)
    assert client["requestor"] is False
    assert client["who"]["identifier"]["value"].startswith("test-admin-")
    assert (holder["who"]["identifier"]["value"], holder["requestor"]) == (HOSPITAL, False)

    deny = events[decided["deny"]["decision_id"]]
    assert deny["outcome"] == "0"  # a deny is a decision made, not a failed event
    assert deny["outcomeDesc"].startswith("deny (field-not-covered); agreement isa-riverton-mash")
    assert _details(deny)["decision"] == "deny"
    assert _details(deny)["routes_offered"] == "break-glass"

    masked = events[decided["masked"]["decision_id"]]
    assert _details(masked)["obligations"] == "contact.address=postcode-district"


def test_a_purpose_with_codes_comes_out_coded_and_one_without_as_text(
    riverton: Server, decided: dict[str, dict[str, Any]]
) -> None:
    events = _events(_export(riverton))
    permit = events[decided["permit"]["decision_id"]]
    [purpose] = permit["purposeOfEvent"]
    assert purpose["text"] == "Hospital discharge planning"
    assert _codes([purpose]) == [(ACT_REASON, "COC")]
    assert permit["agent"][0]["purposeOfUse"] == [purpose]
    deny = events[decided["deny"]["decision_id"]]
    assert deny["purposeOfEvent"] == [{"text": "Safeguarding children"}]


def test_break_glass_is_coded_etreat_and_labelled_btg(
    riverton: Server, decided: dict[str, dict[str, Any]]
) -> None:
    event = _events(_export(riverton))[decided["break-glass"]["decision_id"]]
    assert event["meta"]["security"] == [
        {"system": ACT_REASON, "code": "BTG", "display": "break the glass"}
    ]
    assert (ACT_REASON, "ETREAT") in _codes(event["purposeOfEvent"])
    requester, user, _, _ = event["agent"]
    assert (ACT_REASON, "ETREAT") in _codes(requester["purposeOfUse"])
    assert (ACT_REASON, "ETREAT") in _codes(user["purposeOfUse"])
    assert [(c["system"], c["code"]) for c in event["subtype"]] == [(fhir.DCM, "110127")]
    assert event["outcomeDesc"].startswith("permit (break-glass)")
    details = _details(event)
    assert details["break_glass"] == "true"
    assert details["justification"] == "child admitted unconscious"


def test_the_filters_apply_and_nothing_found_is_a_valid_empty_bundle(
    riverton: Server, decided: dict[str, dict[str, Any]]
) -> None:
    denies = _export(riverton, decision="deny")
    assert list(_events(denies)) == [decided["deny"]["decision_id"]]
    nothing = _export(riverton, person="P-NOBODY")
    assert "entry" not in nothing  # FHIR has no empty arrays


def test_a_bundle_sent_in_many_chunks_is_one_valid_document(
    riverton: Server, decided: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = riverton.post(
        "/v1/decisions/batch",
        json={
            "requester": CHILDREN,
            "holder": HOSPITAL,
            "subject": CHILD,
            "fields": "*",
            "purpose": "safeguarding.children",
        },
    )
    assert batch.status_code == 200, batch.text
    monkeypatch.setattr(fhir, "CHUNK_BYTES", 1)  # every entry its own chunk
    document = _export(riverton)
    assert len(document["entry"]) == len(decided) + len(batch.json()["decisions"])


def test_an_unknown_export_format_is_refused(riverton: Server) -> None:
    response = riverton.get(EXPORT, params={"format": "hl7v2"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


# The vocabulary's purpose codes.

BASE: dict[str, Any] = {"agencies": [{"id": "a"}], "fields": [{"id": "f", "class": "personal"}]}


def _purposes(*entries: dict[str, Any]) -> dict[str, Any]:
    return {**BASE, "purposes": list(entries)}


def test_the_sample_vocabulary_codes_its_care_purposes() -> None:
    vocabulary = parse_vocabulary(load_yaml(SAMPLE_VOCABULARY))
    assert vocabulary.purpose_codes["direct-care"] == {"hl7-purpose-of-use": "TREAT"}
    assert vocabulary.purpose_codes["direct-care.discharge"] == {"hl7-purpose-of-use": "COC"}
    assert "safeguarding.children" not in vocabulary.purpose_codes


def test_a_purpose_without_codes_takes_its_parents() -> None:
    vocabulary = parse_vocabulary(
        _purposes(
            {"id": "care", "codes": {"hl7-purpose-of-use": "TREAT"}},
            {"id": "care.emergency", "codes": {"hl7-purpose-of-use": "ETREAT"}},
            {"id": "care.home"},
            {"id": "other"},
        )
    )
    assert vocabulary.purpose_codes == {
        "care": {"hl7-purpose-of-use": "TREAT"},
        "care.emergency": {"hl7-purpose-of-use": "ETREAT"},
        "care.home": {"hl7-purpose-of-use": "TREAT"},
    }


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        ({"snomed": "1234"}, "purposes: 'care' has a code in unknown code system 'snomed'"),
        ({"hl7-purpose-of-use": ""}, "purposes: 'care' has a malformed hl7-purpose-of-use code"),
        ({"hl7-purpose-of-use": "TR EAT"}, "malformed"),
        ({"hl7-purpose-of-use": 7}, "malformed"),
        ("TREAT", "purposes: 'care' codes must map a code system to a code"),
        ({}, "must map a code system to a code"),
    ],
)
def test_a_malformed_or_unknown_code_is_refused_naming_the_purpose(
    codes: object, message: str
) -> None:
    with pytest.raises(VocabularyError, match=message):
        parse_vocabulary(_purposes({"id": "care", "codes": codes}))
