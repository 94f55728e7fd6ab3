"""Sign-off before activation (ACCORD_REQUIRE_SIGNOFF): a version becomes active only once a
named signatory of every party agency has approved its terms; until then it is
pending-approval and permits nothing. On the shared Blackpool scenario's unsigned draft,
`isa-health-schools-draft` (providers: the health group, recipients: the schools), over
real HTTP on a real database, both backends.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.store.database import make_engine
from app.store.revisions import POLICY, read_revision
from tests.conftest import (
    ProcessServer,
    Server,
    ServerFactory,
    create_key,
    import_agreements_from,
    scenario_env,
)

DRAFT = "isa-health-schools-draft"
PATH = f"/v1/agreements/{DRAFT}"
PARTIES = ["edu.blackpool-schools", "nhs.blackpool-hospitals", "nhs.lancashire-mental-health"]
# What the draft would permit: a school asking the hospital about a child's physical health
ASK = {
    "requester": "edu.blackpool-schools",
    "holder": "nhs.blackpool-hospitals",
    "subject": {"id": "P-701", "attributes": {"age": 9}},
    "field": "health.physical",
    "purpose": "safeguarding.children",
}
SIGNATORIES = {
    "edu.blackpool-schools": "Ann Head, headteacher",
    "nhs.blackpool-hospitals": "Dr Raj Patel, Caldicott guardian",
    "nhs.lancashire-mental-health": "Jo Lee, IG lead",
}


@dataclass
class Partnership:
    server: Server
    keys: dict[str, str]  # party agency -> the key of a `manage` client bound to it
    auditor: str  # the key of an `audit` client bound to the schools

    def approve(self, version: int, agency: str, **body: Any) -> httpx.Response:
        return self.server.post(
            f"{PATH}/versions/{version}/approvals",
            json={"signatory": SIGNATORIES[agency], "agency": agency, **body},
            key=self.keys[agency],
        )

    def sign_off(self, version: int) -> dict[str, Any]:
        response = self.server.get(f"{PATH}/versions/{version}/approvals")
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def decide(self) -> dict[str, Any]:
        response = self.server.post("/v1/decisions", json=ASK)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def history(self) -> list[tuple[int, str, str]]:
        versions = self.server.get(f"{PATH}/versions").json()
        return [(v["version"], v["status"], v["change"]) for v in versions]

    def changes(self) -> list[dict[str, Any]]:
        """The change log of the draft, oldest first."""
        page = self.server.get(
            "/v1/changes", params={"target_type": "agreement", "target_id": DRAFT}
        )
        assert page.status_code == 200, page.text
        return list(reversed(page.json()["items"]))


def _partnership(database_url: str, start: Callable[[dict[str, str]], Server]) -> Partnership:
    """The scenario's agreements imported, a `manage` client bound to each party and an
    auditor, then the service with ACCORD_REQUIRE_SIGNOFF."""
    env = {**scenario_env(database_url), "ACCORD_REQUIRE_SIGNOFF": "true"}
    import_agreements_from(env)
    keys = {
        agency: create_key(env, f"ig-{agency}", scopes="manage", agencies=agency)
        for agency in PARTIES
    }
    auditor = create_key(env, "auditor", scopes="audit", agencies="edu.blackpool-schools")
    return Partnership(start(env), keys, auditor)


@pytest.fixture
def partnership(database_url: str, server_factory: ServerFactory) -> Partnership:
    return _partnership(database_url, server_factory)


def _denied_not_in_force(answer: dict[str, Any]) -> bool:
    reason = answer["reasons"][0]["code"]
    return bool(answer["decision"] == "deny" and reason == "agreement-not-in-force")


def test_activation_awaits_every_party_and_the_last_approval_activates(
    partnership: Partnership,
) -> None:
    server = partnership.server
    assert _denied_not_in_force(partnership.decide())  # a draft

    submitted = server.post(f"{PATH}/activate", json={"reason": "signed at the board"})
    assert submitted.status_code == 201, submitted.text
    assert (submitted.json()["version"], submitted.json()["status"]) == (2, "pending-approval")
    assert server.get(PATH).json()["status"] == "pending-approval"
    assert _denied_not_in_force(partnership.decide())  # pending approval permits nothing
    assert partnership.sign_off(2) == {
        "agreement_id": DRAFT,
        "version": 2,
        "status": "pending-approval",
        "parties": PARTIES,
        "approvals": [],
        "missing": PARTIES,
    }

    for count, agency in enumerate(PARTIES[:-1], start=1):
        approved = partnership.approve(2, agency, note="as agreed at the MASH board")
        assert approved.status_code == 201, approved.text
        answer = approved.json()
        assert (answer["version"], answer["status"]) == (2, "pending-approval")
        assert answer["missing"] == PARTIES[count:]
        assert _denied_not_in_force(partnership.decide())
    assert partnership.sign_off(2)["missing"] == ["nhs.lancashire-mental-health"]
    # A second activation does not skip the sign-off
    again = server.post(f"{PATH}/activate", json={"reason": "impatient"})
    assert again.status_code == 409, again.text
    assert "nhs.lancashire-mental-health" in again.json()["detail"]

    last = partnership.approve(2, "nhs.lancashire-mental-health")
    assert last.status_code == 201, last.text
    active = last.json()
    assert (active["version"], active["status"], active["missing"]) == (3, "active", [])
    assert [
        (a["version"], a["agency"], a["signatory"], a["client"]) for a in active["approvals"]
    ] == [(2, agency, SIGNATORIES[agency], f"ig-{agency}") for agency in PARTIES]
    assert active["approvals"][0]["note"] == "as agreed at the MASH board"
    assert active["approvals"][2]["note"] is None
    permit = partnership.decide()  # the very next decision
    assert permit["decision"] == "permit", permit
    assert (permit["reasons"][0]["agreement_id"], permit["reasons"][0]["agreement_version"]) == (
        DRAFT,
        3,
    )

    assert partnership.history() == [
        (1, "draft", "imported"),
        (2, "pending-approval", "submitted"),
        (3, "active", "activated"),
    ]
    changes = partnership.changes()
    assert [c["action"] for c in changes] == [
        "agreement.imported",
        "agreement.submitted",
        "agreement.approved",
        "agreement.approved",
        "agreement.approved",
        "agreement.activated",
    ]
    approvals = [c for c in changes if c["action"] == "agreement.approved"]
    assert [(c["actor"], c["after"]["agency"], c["after"]["signatory"]) for c in approvals] == [
        (f"ig-{agency}", agency, SIGNATORIES[agency]) for agency in PARTIES
    ]
    assert {c["after"]["client"] for c in approvals} == {f"ig-{agency}" for agency in PARTIES}
    assert changes[-1]["actor"] == "ig-nhs.lancashire-mental-health"  # the last approver's


def test_approvals_are_checked_and_a_refused_one_records_nothing(
    partnership: Partnership,
) -> None:
    server, keys = partnership.server, partnership.keys
    assert server.post(f"{PATH}/activate", json={"reason": "signed"}).status_code == 201
    approvals, auditor = f"{PATH}/versions/2/approvals", partnership.auditor

    refused = {
        # a client bound to another agency (the admin: police, every scope)
        "another agency": (
            server.post(approvals, json={"signatory": "A", "agency": "edu.blackpool-schools"}),
            403,
        ),
        "another party": (
            server.post(
                approvals,
                json={"signatory": "A", "agency": "nhs.blackpool-hospitals"},
                key=keys["edu.blackpool-schools"],
            ),
            403,
        ),
        "no manage scope": (
            server.post(
                approvals,
                json={"signatory": "A", "agency": "edu.blackpool-schools"},
                key=auditor,
            ),
            403,
        ),
        "not a party": (
            server.post(approvals, json={"signatory": "A", "agency": "police.lancashire"}),
            422,
        ),
        "blank signatory": (partnership.approve(2, "edu.blackpool-schools", signatory="  "), 422),
        "no signatory": (
            server.post(
                approvals,
                json={"agency": "edu.blackpool-schools"},
                key=keys["edu.blackpool-schools"],
            ),
            422,
        ),
        "an older version": (partnership.approve(1, "edu.blackpool-schools"), 409),
        "no such version": (partnership.approve(9, "edu.blackpool-schools"), 404),
    }
    for case, (response, status) in refused.items():
        assert response.status_code == status, (case, response.text)
        assert response.headers["content-type"] == "application/problem+json", case
    params = refused["not a party"][0].json()["invalid_params"]
    assert [p["name"] for p in params] == ["agency"]
    assert "signatory" in [
        p["name"] for p in refused["blank signatory"][0].json()["invalid_params"]
    ]

    assert partnership.approve(2, "edu.blackpool-schools").status_code == 201
    twice = partnership.approve(2, "edu.blackpool-schools", signatory="Someone Else")
    assert twice.status_code == 409, twice.text
    assert "already" in twice.json()["detail"]
    # An active agreement has nothing to approve
    mash = server.post(
        "/v1/agreements/isa-blackpool-mash/versions/1/approvals",
        json={"signatory": "A", "agency": "police.lancashire"},
    )
    assert mash.status_code == 409, mash.text

    listed = server.get(approvals, key=auditor)  # an auditor reads the sign-off
    assert listed.status_code == 200, listed.text
    assert [a["agency"] for a in listed.json()["approvals"]] == ["edu.blackpool-schools"]
    assert [a["signatory"] for a in listed.json()["approvals"]] == ["Ann Head, headteacher"]
    actions = [c["action"] for c in partnership.changes()]
    assert actions.count("agreement.approved") == 1
    assert server.get(f"{PATH}/versions/9/approvals").status_code == 404


def test_an_approval_is_of_the_terms_and_a_new_version_needs_new_approvals(
    partnership: Partnership,
) -> None:
    server = partnership.server
    # Every party approves the draft before it is activated: activation is then immediate
    for agency in PARTIES:
        assert partnership.approve(1, agency).status_code == 201
    active = server.post(f"{PATH}/activate", json={"reason": "signed by all"})
    assert (active.json()["version"], active.json()["status"]) == (2, "active")
    assert partnership.decide()["decision"] == "permit"

    # New terms: pending again, the agreement permits nothing until all approve them
    document = {
        **server.get(PATH).json()["document"],
        "grants": [
            {"purposes": ["safeguarding.children"], "fields": ["health.physical", "health.mental"]}
        ],
    }
    revised = server.post(f"{PATH}/versions", json={"document": document, "reason": "wider"})
    assert revised.status_code == 201, revised.text
    assert (revised.json()["version"], revised.json()["status"]) == (3, "pending-approval")
    assert _denied_not_in_force(partnership.decide())
    assert partnership.sign_off(3)["approvals"] == []
    assert partnership.sign_off(3)["missing"] == PARTIES
    assert [a["version"] for a in partnership.sign_off(2)["approvals"]] == [1, 1, 1]  # history

    for agency in PARTIES:
        assert partnership.approve(3, agency).status_code == 201
    assert server.get(PATH).json()["status"] == "active"
    assert partnership.decide()["reasons"][0]["agreement_version"] == 4

    # A suspension keeps the terms, so their approvals: reactivation is immediate
    assert server.post(f"{PATH}/suspend", json={"reason": "breach review"}).status_code == 201
    assert _denied_not_in_force(partnership.decide())
    reactivated = server.post(f"{PATH}/activate", json={"reason": "review closed"})
    assert (reactivated.json()["version"], reactivated.json()["status"]) == (6, "active")
    assert partnership.decide()["reasons"][0]["agreement_version"] == 6

    assert partnership.history() == [
        (1, "draft", "imported"),
        (2, "active", "activated"),
        (3, "pending-approval", "revised"),
        (4, "active", "activated"),
        (5, "suspended", "suspended"),
        (6, "active", "activated"),
    ]


def test_without_the_setting_activation_does_not_wait(
    database_url: str, server_factory: ServerFactory
) -> None:
    env = scenario_env(database_url)
    import_agreements_from(env)
    server = server_factory(env)
    active = server.post(f"{PATH}/activate", json={"reason": "signed"})
    assert (active.json()["version"], active.json()["status"]) == (2, "active")


RACERS = 6  # three approvals by each of the two parties still to approve


@pytest.mark.slow
def test_concurrent_approvals_completing_the_sign_off_activate_once(
    database_url: str, process_server_factory: Callable[[dict[str, str]], ProcessServer]
) -> None:
    """The last two parties approve at once, each three times, released by one barrier
    against a real `accord serve`: one approval per party is recorded, the rest are 409
    (already approved, or no longer the current version), never 500; one activation, the
    policy revision moved once."""
    partnership = _partnership(database_url, process_server_factory)
    keys = partnership.keys
    assert partnership.approve(1, "nhs.blackpool-hospitals").status_code == 201
    submitted = partnership.server.post(f"{PATH}/activate", json={"reason": "signed"})
    assert submitted.json()["status"] == "pending-approval"
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            revision = read_revision(connection, POLICY)

        racing = ["edu.blackpool-schools", "nhs.lancashire-mental-health"] * (RACERS // 2)
        barrier = threading.Barrier(RACERS)
        responses: list[httpx.Response] = []

        def approve(agency: str) -> None:
            with partnership.server.client(key=keys[agency]) as api:
                body = {"signatory": SIGNATORIES[agency], "agency": agency}
                barrier.wait()
                responses.append(api.post(f"{PATH}/versions/2/approvals", json=body))

        threads = [threading.Thread(target=approve, args=(agency,)) for agency in racing]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert Counter(r.status_code for r in responses) == Counter({201: 2, 409: RACERS - 2})
        for response in responses:
            if response.status_code == 409:
                assert response.headers["content-type"] == "application/problem+json"
        with engine.connect() as connection:
            assert read_revision(connection, POLICY) == revision + 1
    finally:
        engine.dispose()
    assert partnership.history() == [
        (1, "draft", "imported"),
        (2, "pending-approval", "submitted"),
        (3, "active", "activated"),
    ]
    assert sorted(a["agency"] for a in partnership.sign_off(3)["approvals"]) == PARTIES
    actions = [c["action"] for c in partnership.changes()]
    assert actions.count("agreement.approved") == 3
    assert actions.count("agreement.activated") == 1
    assert partnership.decide()["decision"] == "permit"
