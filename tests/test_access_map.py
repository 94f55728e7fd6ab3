"""The access map (`GET /v1/access-map` and `/console/access-map`) on the Blackpool scenario:
the flows are worked out here from the agreement and vocabulary files themselves (groups,
class inheritance, validity), not by the compiler, and compared with the answer."""

from __future__ import annotations

import html
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from app.console.access_map_svg import access_map_svg
from app.console.views import Names
from app.policy.access_map import Flow, Terms
from app.policy.vocabulary import parse_vocabulary
from tests.conftest import SCENARIO, ScenarioService, load_yaml

VOCABULARY = load_yaml(SCENARIO / "vocabulary.yaml")
AGREEMENTS = [load_yaml(path) for path in sorted((SCENARIO / "agreements").glob("*.yaml"))]
CLASS_ORDER = ["personal", "special-category", "criminal-offence"]
NOT_IN_FORCE = {  # draft, suspended, expired, not yet valid
    "isa-health-schools-draft",
    "isa-housing-police",
    "isa-probation-police-2020",
    "isa-police-housing-future",
}
POLICE, CHILDREN = "police.lancashire", "la.blackpool.childrens-services"
MASH = "isa-blackpool-mash"


def _agencies(names: list[str]) -> set[str]:
    found = set()
    for entry in VOCABULARY["agencies"]:
        if entry["id"] in names or set(entry.get("groups", [])) & set(names):
            found.add(entry["id"])
    return found


def _classes(fields: list[str]) -> list[str]:
    """The classes of the fields and of every field under them (a class is inherited)."""
    own: dict[str, str] = {}
    for entry in VOCABULARY["fields"]:
        parent = entry["id"].rpartition(".")[0]
        own[entry["id"]] = entry.get("class") or own[parent]
    found = {
        kind
        for name, kind in own.items()
        for granted in fields
        if name == granted or name.startswith(f"{granted}.")
    }
    return [kind for kind in CLASS_ORDER if kind in found]


def _related(purpose: str, granted: list[str]) -> bool:
    """A grant serves a purpose named at, above or below it in the dotted tree."""
    return any(
        name == purpose or purpose.startswith(f"{name}.") or name.startswith(f"{purpose}.")
        for name in granted
    )


def expected(
    today: date,
    *,
    agreements: list[dict[str, Any]] = AGREEMENTS,
    agency: str | None = None,
    purpose: str | None = None,
    data_class: str | None = None,
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(holder, requester, agreement) -> what the map says about it."""

    def kept(block: dict[str, Any]) -> bool:
        return (purpose is None or _related(purpose, block["purposes"])) and (
            data_class is None or data_class in _classes(block["fields"])
        )

    flows = {}
    for agreement in agreements:
        if not (
            agreement["status"] == "active"
            and agreement["valid_from"] <= today < agreement["valid_until"]
        ):
            continue
        grants = [grant for grant in agreement["grants"] if kept(grant)]
        emergency = agreement.get("break_glass")
        emergency = emergency if emergency and kept(emergency) else None
        if not grants and not emergency:
            continue
        for holder in _agencies(agreement["providers"]):
            for requester in _agencies(agreement["recipients"]):
                if agency is not None and agency not in (holder, requester):
                    continue
                subjects = [grant.get("subject", {}) for grant in grants]
                flows[holder, requester, agreement["id"]] = {
                    "data_classes": _classes([f for grant in grants for f in grant["fields"]]),
                    "purposes": sorted({p for grant in grants for p in grant["purposes"]}),
                    "ages": [(s.get("min_age"), s.get("max_age")) for s in subjects],
                    "requires_consent": any(g.get("requires_consent") for g in grants),
                    "break_glass": _classes(emergency["fields"]) if emergency else None,
                }
    return flows


def answered(body: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        (flow["holder"], flow["requester"], flow["agreement_id"]): {
            "data_classes": flow["data_classes"],
            "purposes": sorted(flow["purposes"]),
            "ages": [(grant["min_age"], grant["max_age"]) for grant in flow["grants"]],
            "requires_consent": flow["requires_consent"],
            "break_glass": flow["break_glass"]["data_classes"] if flow["break_glass"] else None,
        }
        for flow in body["flows"]
    }


def _map(service: ScenarioService, **params: str) -> dict[str, Any]:
    response = service.server.get("/v1/access-map", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _today(body: dict[str, Any]) -> date:
    as_of = date.fromisoformat(body["as_of"])
    assert abs(as_of - datetime.now(UTC).date()) <= timedelta(days=1)
    return as_of


def test_the_map_is_every_agreement_in_force_by_holder_requester_and_agreement(
    scenario_service: ScenarioService,
) -> None:
    body = _map(scenario_service)
    today = _today(body)
    flows = answered(body)
    assert flows == expected(today)
    assert len(flows) == 12  # adult safeguarding 3, MASH 5, early help 4
    assert not {agreement for _, _, agreement in flows} & NOT_IN_FORCE

    # The MASH: police convictions and arrests, mental health, for safeguarding children,
    # of children only; in an emergency identity, contact and health, for any safeguarding.
    (mash,) = [f for f in body["flows"] if (f["holder"], f["agreement_id"]) == (POLICE, MASH)]
    assert mash["requester"] == CHILDREN and mash["agreement_version"] == 1
    assert mash["data_classes"] == ["personal", "special-category", "criminal-offence"]
    assert mash["purposes"] == ["safeguarding.children"]
    assert mash["subjects"] == ["children (under 18)"]
    assert (mash["grants"][0]["min_age"], mash["grants"][0]["max_age"]) == (None, 17)
    assert mash["break_glass"] == {
        "purposes": ["safeguarding"],
        "fields": ["identity", "contact", "health"],
        "data_classes": ["personal", "special-category"],
    }
    adults = flows[POLICE, "la.blackpool.adult-services", "isa-adult-safeguarding"]
    assert adults["ages"] == [(18, None)]
    early_help = flows["edu.blackpool-schools", "la.blackpool.early-help", "isa-early-help"]
    assert early_help["requires_consent"] and early_help["ages"] == [(None, None)]
    assert {agency["id"]: agency["name"] for agency in body["agencies"]}[CHILDREN] == (
        "Blackpool Council Children's Services"
    )


@pytest.mark.parametrize(
    ("params", "agreements"),
    [
        ({"agency": POLICE}, {"isa-blackpool-mash", "isa-adult-safeguarding"}),
        ({"agency": "la.blackpool.early-help"}, {"isa-early-help"}),
        ({"agency": "probation.north-west"}, set()),  # only its expired agreement names it
        ({"purpose": "safeguarding"}, {"isa-blackpool-mash", "isa-adult-safeguarding"}),
        ({"purpose": "safeguarding.children"}, {"isa-blackpool-mash"}),
        # the MASH's break-glass block is for all safeguarding: above adults, so it covers it
        ({"purpose": "safeguarding.adults"}, {"isa-blackpool-mash", "isa-adult-safeguarding"}),
        ({"purpose": "early-help.transience"}, {"isa-early-help"}),  # granted for early-help
        ({"purpose": "crime-prevention"}, set()),  # none of those agreements is in force
        ({"data_class": "criminal-offence"}, {"isa-blackpool-mash", "isa-adult-safeguarding"}),
        ({"data_class": "special-category"}, {MASH, "isa-adult-safeguarding", "isa-early-help"}),
        (
            {"agency": "nhs.lancashire-mental-health", "purpose": "early-help"},
            {"isa-early-help"},
        ),
    ],
)
def test_filters_narrow_the_map(
    scenario_service: ScenarioService, params: dict[str, str], agreements: set[str]
) -> None:
    body = _map(scenario_service, **params)
    flows = answered(body)
    assert flows == expected(
        _today(body),
        agency=params.get("agency"),
        purpose=params.get("purpose"),
        data_class=params.get("data_class"),
    )
    assert {agreement for _, _, agreement in flows} == agreements
    if "agency" in params:
        assert all(params["agency"] in (holder, requester) for holder, requester, _ in flows)
    assert {a["id"] for a in body["agencies"]} == {name for f in flows for name in f[:2]}


def test_a_purpose_covered_only_by_break_glass_shows_the_block_alone(
    scenario_service: ScenarioService,
) -> None:
    body = _map(scenario_service, agency=POLICE, purpose="safeguarding.adults")
    flows = {flow["agreement_id"]: flow for flow in body["flows"]}
    assert flows[MASH]["grants"] == [] and flows[MASH]["data_classes"] == []
    assert flows[MASH]["break_glass"]["purposes"] == ["safeguarding"]
    assert flows["isa-adult-safeguarding"]["purposes"] == ["safeguarding.adults"]


def test_unknown_names_and_parameters_are_refused_and_named(
    scenario_service: ScenarioService,
) -> None:
    refused = {
        "agency=police": ("agency", "'police' is not an agency in the vocabulary"),
        "purpose=safeguarding.pets": ("purpose", "'safeguarding.pets' is not a purpose"),
        "data_class=secret": ("data_class", ""),
        "holder=police.lancashire": ("holder", "is not a parameter of this route"),
    }
    for query, (name, reason) in refused.items():
        response = scenario_service.server.get(f"/v1/access-map?{query}")
        assert response.status_code == 422, (query, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        problems = {p["name"]: p["reason"] for p in response.json()["invalid_params"]}
        assert name in problems and reason in problems[name], (query, problems)


def test_the_console_draws_the_map_and_refuses_unknown_names(
    scenario_service: ScenarioService,
) -> None:
    server = scenario_service.server
    with server.client(key=None) as browser:
        assert browser.get("/console/access-map").headers["location"] == "/console/login"
        signed_in = browser.post("/console/login", data={"key": server.key})
        assert signed_in.status_code == 303
        page = browser.get("/console/access-map", params={"agency": POLICE})
        assert page.status_code == 200, page.text
        text = html.unescape(page.text)
        assert text.count('<g class="flow"') == 2
        assert f'id="flow-{POLICE}--{CHILDREN}--{MASH}"' in text
        assert 'aria-current="page">Access map</a>' in text
        empty = browser.get("/console/access-map", params={"purpose": "crime-prevention"})
        assert "No agreement in force gives a flow" in empty.text
        assert "<svg" not in empty.text
        refused = browser.get("/console/access-map", params={"agency": "police"})
        assert refused.status_code == 422
        assert "'police' is not an agency in the vocabulary" in html.unescape(refused.text)


def test_the_map_follows_the_live_policy(scenario_service: ScenarioService) -> None:
    """Activating the unsigned draft puts its flows on the map; suspending takes them off
    (last in this module: the agreement stays suspended)."""
    server = scenario_service.server
    draft = "isa-health-schools-draft"
    activated = server.post(f"/v1/agreements/{draft}/activate", json={"reason": "signed"})
    assert activated.status_code == 201, activated.text
    body = _map(scenario_service, agency="edu.blackpool-schools")
    signed = [{**a, "status": "active"} if a["id"] == draft else a for a in AGREEMENTS]
    flows = answered(body)
    assert flows == expected(_today(body), agency="edu.blackpool-schools", agreements=signed)
    assert flows["nhs.blackpool-hospitals", "edu.blackpool-schools", draft] == {
        "data_classes": ["special-category"],
        "purposes": ["safeguarding.children"],
        "ages": [(None, None)],
        "requires_consent": False,
        "break_glass": None,
    }
    suspended = server.post(f"/v1/agreements/{draft}/suspend", json={"reason": "not signed"})
    assert suspended.status_code == 201, suspended.text
    assert draft not in {flow["agreement_id"] for flow in _map(scenario_service)["flows"]}


def test_the_picture_escapes_every_name() -> None:
    vocabulary = parse_vocabulary(
        {
            "agencies": [
                {"id": "a.one", "name": '<script>alert("x")</script> & co'},
                {"id": "a.two", "name": "Two"},
            ],
            "purposes": [{"id": "p"}],
            "fields": [{"id": "f", "class": "personal"}],
        }
    )
    terms = Terms(("p",), ("f",), ("personal",))
    flow = Flow("a.one", "a.two", "isa-<x>", 1, "<i>title</i>", (terms,), None)
    picture = access_map_svg([flow], Names(vocabulary))
    assert "<script>" not in picture and "<i>" not in picture and "isa-<x>" not in picture
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in picture
