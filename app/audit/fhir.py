"""The audit trail as FHIR R4 for NHS partners: one AuditEvent per decision, in a `searchset`
Bundle (the answer to a query of the trail), streamed; docs/audit.md has the mapping.

The event recorded is Accord's decision: a partner system asked whether a holder may
disclose a field of a person to a requester for a purpose, and Accord answered. So every
event is a DICOM Query (110112) executed (action `E`) with outcome 0 (success): a deny is a
question answered too, not a failed one. What was decided is in `outcomeDesc` and in the
entity's details, never in `outcome`, which a reader would take for the disclosure's. A
break-glass permit is coded as FHIR's break-glass examples code it: purpose of use ETREAT
(emergency treatment) on the event and its requesting agents, the security label BTG
(break the glass) on the event, and the subtype DICOM 110127 (emergency override).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from app.policy.vocabulary import PURPOSE_CODE_SYSTEMS, Vocabulary
from app.store.tables import AuditDecision

MEDIA_TYPE = "application/fhir+json"
FHIR_VERSION = "4.0"  # R4, given as the media type's fhirVersion parameter

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"

QUERY = {"system": DCM, "code": "110112", "display": "Query"}
EMERGENCY_OVERRIDE = {"system": DCM, "code": "110127", "display": "Emergency Override Started"}
EMERGENCY_TREATMENT = {"system": ACT_REASON, "code": "ETREAT", "display": "Emergency Treatment"}
BREAK_THE_GLASS = {"system": ACT_REASON, "code": "BTG", "display": "break the glass"}
REQUESTER = {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]}
HOLDER = {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]}
APPLICATION = {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]}
APPLICATION_SERVER = {"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}
PERSON = {"system": ENTITY_TYPE, "code": "1", "display": "Person"}
SYSTEM_OBJECT = {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}
PATIENT = {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}
DOMAIN_RESOURCE = {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}
OBSERVER = {"display": "Accord policy decision service"}

CHUNK_BYTES = 64 * 1024  # entries are sent this much at a time


def instant(moment: datetime) -> str:
    """A FHIR instant: UTC, with its zone."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _outcome(row: AuditDecision) -> str:
    """What was decided, in words: the decision, its reason, and what it rests on."""
    parts = [f"{row.decision} ({row.reason})"]
    if row.agreement_id is not None:
        parts.append(f"agreement {row.agreement_id} v{row.agreement_version}")
    if row.restriction_id is not None:
        overridden = row.decision == "permit"
        parts.append(
            f"objection {row.restriction_id} overridden"
            if overridden
            else f"restriction {row.restriction_id}"
        )
    if row.consent_id is not None:
        parts.append(f"consent {row.consent_id}")
    return "; ".join(parts)


def _purposes(row: AuditDecision, vocabulary: Vocabulary) -> list[dict[str, Any]]:
    """The purpose asked, coded where the vocabulary codes it; ETREAT for a break-glass."""
    purpose: dict[str, Any] = {"text": vocabulary.purposes.titles.get(row.purpose, row.purpose)}
    codes = vocabulary.purpose_codes.get(row.purpose, {})
    if codes:
        purpose["coding"] = [
            {"system": PURPOSE_CODE_SYSTEMS[system], "code": code} for system, code in codes.items()
        ]
    return [purpose, {"coding": [EMERGENCY_TREATMENT]}] if row.break_glass else [purpose]


def _agency(agency_id: str, vocabulary: Vocabulary) -> dict[str, Any]:
    known = vocabulary.agencies.get(agency_id)
    return {
        "identifier": {"value": agency_id},
        "type": "Organization",
        **({"display": known.name} if known is not None else {}),
    }


def _agents(
    row: AuditDecision, vocabulary: Vocabulary, purposes: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Who asked (the requesting agency and its user), through which API client, of whom."""
    agents: list[dict[str, Any]] = [
        {
            "type": REQUESTER,
            "who": _agency(row.requester, vocabulary),
            "requestor": True,
            "purposeOfUse": purposes,
        }
    ]
    if row.user_ref is not None:
        agents.append(
            {
                "who": {"identifier": {"value": row.user_ref}},
                "requestor": True,
                "purposeOfUse": purposes,
            }
        )
    agents.append(
        {
            "type": APPLICATION,
            "who": {"identifier": {"value": row.client}, "type": "Device"},
            "requestor": False,
        }
    )
    agents.append({"type": HOLDER, "who": _agency(row.holder, vocabulary), "requestor": False})
    return agents


def _details(row: AuditDecision) -> list[dict[str, str]]:
    """The audit row's own record of the decision, one detail a column (none when empty)."""
    values: list[tuple[str, object]] = [
        ("decision", row.decision),
        ("reason", row.reason),
        ("purpose", row.purpose),
        ("agreement_id", row.agreement_id),
        ("agreement_version", row.agreement_version),
        ("restriction_id", row.restriction_id),
        ("consent_id", row.consent_id),
        ("break_glass", "true" if row.break_glass else "false"),
        ("justification", row.justification),
        ("case_ref", row.case_ref),
        ("obligations", ";".join(f"{o['field']}={o['mask']}" for o in row.obligations or [])),
        ("routes_offered", ";".join(row.routes_offered or [])),
        ("policy_revision", row.policy_revision),
        ("request_id", row.request_id),
        ("seq", row.seq),
    ]
    return [
        {"type": name, "valueString": str(value)}
        for name, value in values
        if value is not None and str(value).strip()
    ]


def audit_event(row: AuditDecision, vocabulary: Vocabulary) -> dict[str, Any]:
    """One decision as a FHIR R4 AuditEvent (names no longer in the vocabulary as ids)."""
    purposes = _purposes(row, vocabulary)
    event: dict[str, Any] = {"resourceType": "AuditEvent", "id": row.decision_id}
    if row.break_glass:
        event["meta"] = {"security": [BREAK_THE_GLASS]}
    event |= {
        "type": QUERY,
        **({"subtype": [EMERGENCY_OVERRIDE]} if row.break_glass else {}),
        "action": "E",
        "recorded": instant(row.decided_at),
        "outcome": "0",
        "outcomeDesc": _outcome(row),
        "purposeOfEvent": purposes,
        "agent": _agents(row, vocabulary, purposes),
        "source": {"site": "Accord", "observer": OBSERVER, "type": [APPLICATION_SERVER]},
        "entity": [
            {"what": {"identifier": {"value": row.person_id}}, "type": PERSON, "role": PATIENT},
            {
                "type": SYSTEM_OBJECT,
                "role": DOMAIN_RESOURCE,
                "name": row.field,
                **(
                    {"description": vocabulary.fields.titles[row.field]}
                    if row.field in vocabulary.fields.titles
                    else {}
                ),
                "detail": _details(row),
            },
        ],
    }
    return event


def bundle(
    rows: Iterable[AuditDecision], vocabulary: Vocabulary, *, self_url: str, now: datetime
) -> Iterator[bytes]:
    """A searchset Bundle of every row's AuditEvent, written as the rows come (constant
    memory). FHIR allows no empty array: with no rows the Bundle has no `entry`."""
    head = {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": instant(now),
        "link": [{"relation": "self", "url": self_url}],
    }
    chunk = bytearray(orjson.dumps(head)[:-1])  # open: entries follow
    separator = b',"entry":['
    for row in rows:
        entry = {
            "fullUrl": f"urn:uuid:{row.decision_id}",
            "resource": audit_event(row, vocabulary),
            "search": {"mode": "match"},
        }
        chunk += separator + orjson.dumps(entry)
        separator = b","
        if len(chunk) >= CHUNK_BYTES:
            yield bytes(chunk)
            chunk.clear()
    chunk += b"}" if separator != b"," else b"]}"
    yield bytes(chunk)
