"""The auditor console over HTTP, in process: sign-in, refusals shown as pages with their
status, whole-day date filters and the overdue tab on a clock of its own (the pages
themselves are driven in Chromium by tests/test_console_browser.py)."""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx

from app.runtime.clock import FixedClock
from tests.conftest import ScenarioService, Server, ServerFactory, scenario_env

EMERGENCY = {"emergency": True, "justification": "Credible threat reported by GP"}
ADULT_EMERGENCY = {
    "requester": "la.blackpool.adult-services",
    "holder": "nhs.lancashire-mental-health",
    "subject": {"id": "P-201", "attributes": {"age": 34}},
    "field": "health.mental",
    "purpose": "safeguarding.adults",
    "context": EMERGENCY,
}


@contextmanager
def _console(server: Server) -> Iterator[httpx.Client]:
    """A browser-like client signed in to the console (its cookie, no bearer key)."""
    with server.client(key=None) as browser:
        signed_in = browser.post("/console/login", data={"key": server.key})
        assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/console")
        yield browser


def _decide(server: Server, question: dict[str, Any]) -> dict[str, Any]:
    response = server.post("/v1/decisions", json=question)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_the_console_asks_to_sign_in_and_shows_each_refusal_as_a_page(
    scenario_service: ScenarioService,
) -> None:
    server = scenario_service.server
    with server.client(key=None) as stranger:
        for path in ("/console", "/console/break-glass", "/console/export?format=csv"):
            answer = stranger.get(path)
            assert (answer.status_code, answer.headers["location"]) == (303, "/console/login")
        assert stranger.post("/console/login", data={"key": "acc_nope"}).status_code == 200

    deny = _decide(server, {**ADULT_EMERGENCY, "context": {}})  # the objection holds
    refused = {
        "/console?field=criminal.nope": (422, "'criminal.nope' is not a field in the vocabulary"),
        "/console?requester=police": (422, "'police' is not an agency in the vocabulary"),
        "/console?pending=false": (422, "pending: is not a parameter of this route"),
        "/console?from=2026-13-01": (422, "from"),
        "/console?to=9999-12-31": (422, "to"),
        "/console/export?format=xml": (422, "format"),
        "/console/subject-access?person=P%201": (422, "person"),
        f"/console/decisions/{uuid.uuid4()}": (404, "no decision"),
        "/console/break-glass?tab=later": (422, "tab"),
    }
    with _console(server) as browser:
        for path, (status, named) in refused.items():
            page = browser.get(path)
            assert page.status_code == status, (path, page.text)
            assert page.headers["content-type"].startswith("text/html")
            assert named in html.unescape(page.text), (path, page.text)
        review = {"outcome": "justified", "note": "n/a", "reviewer": "J. Okafor"}
        not_emergency = browser.post(f"/console/break-glass/{deny['decision_id']}", data=review)
        assert not_emergency.status_code == 409
        assert "was not a break-glass permit" in not_emergency.text
        unnamed = browser.post(
            f"/console/break-glass/{deny['decision_id']}", data={**review, "reviewer": " "}
        )
        assert (unnamed.status_code, "reviewer" in unnamed.text) == (422, True)


def test_a_day_in_the_date_filters_is_the_whole_utc_day_and_overdue_permits_have_a_tab(
    scenario_service: ScenarioService, server_factory: ServerFactory
) -> None:
    # Late tomorrow: after the scenario's register entries were recorded (now), so P-201's
    # objection holds and an emergency overrides it.
    day = datetime.now(UTC).date() + timedelta(days=1)
    clock = FixedClock(datetime.combine(day, time(23, 30), UTC))
    server = server_factory(
        {**scenario_env(scenario_service.database_url), "ACCORD_BREAK_GLASS_REVIEW_DAYS": "1"},
        clock=clock,
    )
    case_ref = f"BG-{uuid.uuid4().hex[:8]}"
    context = {**EMERGENCY, "case_ref": case_ref}
    decision_id = _decide(server, {**ADULT_EMERGENCY, "context": context})["decision_id"]
    with _console(server) as browser:

        def found(**filters: str) -> bool:
            page = browser.get("/console", params={"case_ref": case_ref, **filters})
            assert page.status_code == 200, page.text
            return f"/console/decisions/{decision_id}" in page.text

        assert found(**{"from": str(day), "to": str(day)})
        assert not found(**{"from": str(day + timedelta(days=1))})
        assert not found(to=str(day - timedelta(days=1)))

        def tab(name: str) -> str:
            page = browser.get("/console/break-glass", params={"tab": name})
            assert page.status_code == 200, page.text
            return page.text

        assert f'id="review-{decision_id}"' not in tab("overdue")
        clock.advance(timedelta(days=2, hours=3))
        overdue = tab("overdue")
        assert f'id="review-{decision_id}"' in overdue and "2 days 3 hours ago" in overdue
        assert f'id="review-{decision_id}"' in tab("pending")
        assert f'id="review-{decision_id}"' not in tab("reviewed")
