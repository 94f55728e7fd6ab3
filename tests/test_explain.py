"""`accord decide [--explain]` offline, and POST /v1/simulate with `explain`: the answer of the
one evaluator, with the Casbin lines it saw for each leaf field and the one that decided."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.policy.agreements import parse_agreement
from app.policy.compiler import CompiledPolicy, compile_policy
from app.policy.files import agreement_documents, load_vocabulary
from app.policy.lines import POLICY_TOKENS
from app.policy.register import NO_ENTRIES
from tests.conftest import REPO, SCENARIO, ScenarioService, accord, jsonable, load_yaml

CASES = load_yaml(SCENARIO / "cases.yaml")
BY_NAME = {case["name"]: case for case in CASES["cases"]}
ENV = {
    "ACCORD_DATABASE_URL": "sqlite:///unused-by-accord-decide.db",
    "ACCORD_VOCABULARY_FILE": str(SCENARIO / "vocabulary.yaml"),
}
PERMIT = "children's services see a child's convictions for child safeguarding"
FIELD_NOT_COVERED = "a sibling field of a granted one is not covered"
NO_AGREEMENT = "no agreement between the parties"
SEALED = "a sealed address is never shared"
CONSENTED = "consent-based sharing with a live consent"
EXPIRED = "an expired agreement does not permit"
TOO_OLD = "child safeguarding does not reach an adult"
BREAK_GLASS = "break-glass opens an emergency field that no grant covers, flagged for review"


def _register_rows() -> list[dict[str, Any]]:
    """The cases file's register as rows of `accord register import`'s format."""
    register = CASES["register"]
    return [
        {
            "id": entry["id"],
            "person": entry["person"],
            "kind": entry.get("kind", "consent"),
            "recipients": entry.get("recipients"),
            "fields": entry.get("fields"),
            "purposes": entry.get("purposes"),
            "until": jsonable(entry.get("until")),
            "reason": "scenario register",
        }
        for entry in [*register["restrictions"], *register["consents"]]
    ]


def _write_register(folder: Path, fmt: str) -> Path:
    path = folder / f"register.{fmt}"
    rows = _register_rows()
    if fmt == "ndjson":
        path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
        return path
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    key: " ".join(value) if isinstance(value, list) else value or ""
                    for key, value in row.items()
                }
            )
    return path


def _decide(tmp_path: Path, request: dict[str, Any], *options: str) -> tuple[int, str, str]:
    """Run `accord decide` on the scenario's agreements: exit code, stdout, stderr."""
    file = tmp_path / "request.json"
    file.write_text(json.dumps(request))
    result = accord(
        "decide",
        str(file),
        "--agreements",
        str(SCENARIO / "agreements"),
        *options,
        env=ENV,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr


def _answer(stdout: str) -> tuple[dict[str, Any], str]:
    """The JSON answer at the start of the output, and the text after it (the trace)."""
    answer, end = json.JSONDecoder().raw_decode(stdout)
    return answer, stdout[end:]


def _as_expected(decision: dict[str, Any], expect: dict[str, Any]) -> None:
    reason = decision["reasons"][0]
    actual = {
        "decision": decision["decision"],
        "reason": reason["code"],
        "agreement": reason["agreement_id"],
        "restriction": reason["restriction_id"],
        "break_glass": decision["break_glass"],
    }
    assert {key: actual[key] for key in expect if key in actual} == {
        key: value for key, value in expect.items() if key in actual
    }


@pytest.mark.parametrize(
    ("name", "register"),
    [(PERMIT, None), (FIELD_NOT_COVERED, None), (SEALED, "ndjson"), (CONSENTED, "csv")],
)
def test_accord_decide_gives_the_cases_decision(
    tmp_path: Path, name: str, register: str | None
) -> None:
    case = BY_NAME[name]
    options = ["--register", str(_write_register(tmp_path, register))] if register else []
    code, stdout, stderr = _decide(tmp_path, case["request"], *options)
    assert code == 0, stderr
    answer, rest = _answer(stdout)
    assert answer["decision_id"] is None
    assert answer["field"] == case["request"]["field"]
    _as_expected(answer, case["expect"])
    assert rest.strip() == ""  # no trace without --explain


def test_without_the_register_a_consent_based_grant_is_denied(tmp_path: Path) -> None:
    code, stdout, _ = _decide(tmp_path, BY_NAME[CONSENTED]["request"])
    assert code == 0
    assert _answer(stdout)[0]["reasons"][0]["code"] == "consent-required"


def test_accord_decide_decides_at_the_time_given(tmp_path: Path) -> None:
    """The expired agreement was in force in 2020."""
    request = BY_NAME[EXPIRED]["request"]
    code, stdout, _ = _decide(tmp_path, request, "--at", "2020-06-01T12:00:00+01:00")
    assert code == 0
    answer, _ = _answer(stdout)
    assert (answer["decision"], answer["reasons"][0]["agreement_id"]) == (
        "permit",
        "isa-probation-police-2020",
    )
    assert answer["decided_at"] == "2020-06-01T11:00:00Z"


def test_explain_prints_the_lines_seen_and_the_deciding_one(tmp_path: Path) -> None:
    code, stdout, _ = _decide(tmp_path, BY_NAME[PERMIT]["request"], "--explain")
    assert code == 0
    answer, trace = _answer(stdout)
    assert answer["decision"] == "permit"
    lines = trace.strip().splitlines()
    assert lines[0] == "criminal.convictions: permit (agreement)"
    assert lines[1].startswith("  criminal.convictions: ")
    assert lines[2].split() == list(POLICY_TOKENS)  # the table's header
    deciding = [line for line in lines if line.lstrip().startswith(">")]
    assert len(deciding) == 1
    assert "isa-blackpool-mash@1:grant" in deciding[0].split()
    assert lines[-1] == "    decided by isa-blackpool-mash@1:grant (stage 4, allow)"


def test_explain_traces_each_leaf_of_a_category_and_a_restriction(tmp_path: Path) -> None:
    request = {**BY_NAME[SEALED]["request"], "field": "contact"}
    register = _write_register(tmp_path, "ndjson")
    code, stdout, _ = _decide(tmp_path, request, "--register", str(register), "--explain")
    assert code == 0
    answer, trace = _answer(stdout)
    assert answer["reasons"][0]["restriction_id"] == "r-sealed-address"
    assert "  contact.address: 2 candidate line(s)" in trace
    assert "    decided by restriction:r-sealed-address (stage 1, deny)" in trace
    assert "  contact.phone: 1 candidate line(s)" in trace
    assert "    decided by isa-blackpool-mash@1:grant (stage 4, allow)" in trace


def test_explain_says_when_no_line_matched(tmp_path: Path) -> None:
    code, stdout, _ = _decide(tmp_path, BY_NAME[NO_AGREEMENT]["request"], "--explain")
    assert code == 0
    answer, trace = _answer(stdout)
    assert answer["reasons"][0]["code"] == "no-agreement"
    assert trace.strip().splitlines()[1:] == [
        "  education.attendance: 0 candidate line(s)",
        "    no line matched: default deny",
    ]


@pytest.mark.parametrize(
    ("change", "bad_part"),
    [
        ({"field": "criminal.shoe-size"}, "field: unknown field 'criminal.shoe-size'"),
        ({"subject": {"id": "P-101", "attributes": {"age": "twelve"}}}, "subject.attributes.age"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_an_invalid_request_exits_2_naming_the_bad_part(
    tmp_path: Path, change: dict[str, Any], bad_part: str
) -> None:
    code, stdout, stderr = _decide(tmp_path, {**BY_NAME[PERMIT]["request"], **change})
    assert code == 2
    assert stdout == ""
    assert stderr.startswith("invalid request: ")
    assert bad_part in stderr


# --- POST /v1/simulate with explain ----------------------------------------------------


@pytest.fixture(scope="module")
def scenario_policy() -> CompiledPolicy:
    """The scenario's agreements compiled here, to know each question's candidate lines."""
    vocabulary = load_vocabulary(SCENARIO / "vocabulary.yaml")
    return compile_policy(
        revision=0,
        vocabulary=vocabulary,
        agreements=[
            parse_agreement(document, vocabulary, source=source)
            for source, document in agreement_documents(SCENARIO / "agreements")
        ],
        model_text=(REPO / "policies" / "model.conf").read_text(encoding="utf-8"),
    )


def _simulate(service: ScenarioService, request: dict[str, Any], **options: Any) -> dict[str, Any]:
    body = {**request, "fields": [request["field"]]}
    del body["field"]
    response = service.server.post("/v1/simulate", json={"request": body, **options})
    assert response.status_code == 200, response.text
    decisions: list[dict[str, Any]] = response.json()["decisions"]
    assert len(decisions) == 1
    return decisions[0]


def _candidates(policy: CompiledPolicy, request: dict[str, Any]) -> list[dict[str, str]]:
    """The lines the compiler indexes for a question about a person with no register entry."""
    lines, _ = policy.candidates(
        requester=request["requester"],
        holder=request["holder"],
        person=request["subject"]["id"],
        field_name=request["field"],
        purpose=request["purpose"],
        emergency=request.get("context", {}).get("emergency", False),
        register=NO_ENTRIES,
    )
    return [line._asdict() for line in lines]


@pytest.mark.parametrize(("name", "stage"), [(PERMIT, "grant"), (BREAK_GLASS, "break-glass")])
def test_simulate_explains_a_permit_by_its_agreements_line(
    scenario_service: ScenarioService, scenario_policy: CompiledPolicy, name: str, stage: str
) -> None:
    request = BY_NAME[name]["request"]
    decision = _simulate(scenario_service, request, explain=True)
    reason = decision["reasons"][0]
    assert decision["decision"] == "permit"
    [leaf] = decision["trace"]
    assert leaf["field"] == request["field"]
    assert leaf["lines"] == _candidates(scenario_policy, request)
    assert all(set(line) == set(POLICY_TOKENS) for line in leaf["lines"])
    deciding = leaf["deciding_line"]
    assert deciding in leaf["lines"]
    assert deciding["source"] == f"{reason['agreement_id']}@{reason['agreement_version']}:{stage}"
    assert deciding["eft"] == "allow"


@pytest.mark.parametrize("name", [NO_AGREEMENT, FIELD_NOT_COVERED, TOO_OLD])
def test_simulate_explains_a_deny_no_line_matched(
    scenario_service: ScenarioService, scenario_policy: CompiledPolicy, name: str
) -> None:
    request = BY_NAME[name]["request"]
    decision = _simulate(scenario_service, request, explain=True)
    assert decision["decision"] == "deny"
    assert decision["trace"] == [
        {
            "field": request["field"],
            "lines": _candidates(scenario_policy, request),
            "deciding_line": None,
        }
    ]
    if name == TOO_OLD:  # lines there were, but the person's age meets none
        assert decision["trace"][0]["lines"]


def test_simulate_explains_a_restriction_and_each_leaf_of_a_category(
    scenario_service: ScenarioService,
) -> None:
    request = {**BY_NAME[SEALED]["request"], "field": "contact"}
    decision = _simulate(scenario_service, request, explain=True)
    assert decision["reasons"][0]["restriction_id"] == "r-sealed-address"
    leaves = {leaf["field"]: leaf for leaf in decision["trace"]}
    assert set(leaves) == {"contact.address", "contact.phone"}
    sealed = leaves["contact.address"]["deciding_line"]
    assert (sealed["source"], sealed["eft"], sealed["person"]) == (
        "restriction:r-sealed-address",
        "deny",
        "P-102",
    )
    assert leaves["contact.phone"]["deciding_line"]["source"] == "isa-blackpool-mash@1:grant"


def test_simulate_without_explain_has_no_trace(scenario_service: ScenarioService) -> None:
    assert "trace" not in _simulate(scenario_service, BY_NAME[PERMIT]["request"])
    assert "trace" not in _simulate(scenario_service, BY_NAME[PERMIT]["request"], explain=False)
