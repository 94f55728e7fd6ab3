"""The auditor console in headless Chromium (Debian's chromium and chromium-driver): every
page, driven as an auditor would, with a screenshot of each in var/screenshots/."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.expected_conditions import (
    staleness_of,
    url_contains,
    visibility_of_element_located,
)
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.conftest import REPO, SCENARIO, Backend, ScenarioService, all_pages, load_yaml

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = REPO / "var" / "screenshots"  # for a person to look at
PAGE_SIZE = 50  # app/console/router.py
CHILDREN = "la.blackpool.childrens-services"
ADULTS = "la.blackpool.adult-services"
POLICE = "police.lancashire"
MENTAL_HEALTH = "nhs.lancashire-mental-health"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def scenario_service(scenario_process_service: ScenarioService) -> ScenarioService:
    """Chromium needs a socket: the scenario behind a real `accord serve`."""
    return scenario_process_service


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        "install Debian's chromium and chromium-driver (.ci/run does)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


Shoot = Callable[[str], None]


@pytest.fixture
def shoot(browser: webdriver.Chrome, backend: Backend) -> Shoot:
    """Save the whole page, as laid out now, as var/screenshots/<name>-<backend>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(name: str) -> None:
        size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = browser.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": size["height"],
                    "scale": 1,
                },
            },
        )
        (SCREENSHOTS / f"{name}-{backend.name}.png").write_bytes(base64.b64decode(shot["data"]))

    return save


def _sign_in(browser: webdriver.Chrome, service: ScenarioService) -> None:
    browser.get(f"{service.server.url}/console/login")
    browser.find_element(By.ID, "key").send_keys(service.server.key)
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 15).until(visibility_of_element_located((By.ID, "f-person")))


def _decide(
    service: ScenarioService,
    person: str,
    fields: list[str] | str,
    *,
    requester: str = CHILDREN,
    holder: str = POLICE,
    purpose: str = "safeguarding.children",
    age: int = 12,
    case_ref: str = "CP-77",
    justification: str | None = None,
) -> list[dict[str, Any]]:
    context: dict[str, Any] = {"user": "sw.browser", "case_ref": case_ref}
    if justification is not None:
        context |= {"emergency": True, "justification": justification}
    response = service.server.post(
        "/v1/decisions/batch",
        json={
            "requester": requester,
            "holder": holder,
            "subject": {"id": person, "attributes": {"age": age}},
            "fields": fields,
            "purpose": purpose,
            "context": context,
        },
    )
    assert response.status_code == 200, response.text
    decisions: list[dict[str, Any]] = response.json()["decisions"]
    return decisions


def _emergency_over_objection(service: ScenarioService, person: str, case_ref: str) -> str:
    """A break-glass permit of an adult's mental health over their recorded objection."""
    (permit,) = _decide(
        service,
        person,
        ["health.mental"],
        requester=ADULTS,
        holder=MENTAL_HEALTH,
        purpose="safeguarding.adults",
        age=34,
        case_ref=case_ref,
        justification="Credible threat of suicide reported by GP this morning",
    )
    assert permit["break_glass"] and permit["decision"] == "permit", permit
    return str(permit["decision_id"])


def _fetch(browser: webdriver.Chrome, url: str) -> tuple[int, str, str]:
    """GET `url` from the page, with its cookie: (status, content type, body)."""
    status, media, body = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.text().then("
        "t => done([r.status, r.headers.get('content-type'), t])));",
        url,
    )
    return int(status), str(media), str(body)


def _cells(table: WebElement) -> list[list[str]]:
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows]


def _result_ids(browser: webdriver.Chrome) -> list[str]:
    links = browser.find_elements(By.CSS_SELECTOR, "#results tbody td:first-child a")
    return [str(link.get_attribute("href")).rsplit("/", 1)[1] for link in links]


def test_an_auditor_signs_in_searches_with_filters_pages_through_and_exports(
    scenario_service: ScenarioService, browser: webdriver.Chrome, shoot: Shoot
) -> None:
    person = f"P-SEARCH-{uuid.uuid4().hex[:8]}"
    _decide(scenario_service, person, ["criminal.convictions", "criminal.intelligence"])
    for _ in range(3):  # every leaf field, three times: more than a page
        _decide(scenario_service, person, "*")
    with scenario_service.server.client() as api:
        everything = all_pages(api, {"person": person}, limit=500)
        denied = all_pages(
            api, {"person": person, "requester": CHILDREN, "decision": "deny"}, limit=500
        )
    assert len(everything) > PAGE_SIZE and denied
    base = scenario_service.server.url

    browser.get(f"{base}/console")
    assert browser.current_url.endswith("/console/login")
    browser.find_element(By.ID, "key").send_keys("not-a-key")
    browser.find_element(By.ID, "sign-in").click()
    wait = WebDriverWait(browser, 15)
    assert "unknown" in wait.until(visibility_of_element_located((By.ID, "error"))).text
    _sign_in(browser, scenario_service)

    # Filters from drop-downs that show display names and send ids.
    browser.find_element(By.ID, "f-person").send_keys(person)
    Select(browser.find_element(By.ID, "f-requester")).select_by_visible_text(
        "Blackpool Council Children's Services"
    )
    Select(browser.find_element(By.ID, "f-decision")).select_by_visible_text("denied")
    browser.find_element(By.ID, "run-search").click()
    wait.until(url_contains(f"requester={CHILDREN}"))
    assert "decision=deny" in browser.current_url
    assert sorted(_result_ids(browser)) == sorted(row["decision_id"] for row in denied)
    heading = browser.find_element(By.ID, "results-heading").text
    assert heading == f"{len(denied)} matching decisions"
    cells = _cells(browser.find_element(By.ID, "results"))
    assert {row[2] for row in cells} == {"Blackpool Council Children's Services"}
    assert {row[6] for row in cells} == {"denied"}
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart rect.bar")
    assert {
        bar.get_attribute("class"): int(bar.get_attribute("data-count") or 0) for bar in bars
    } == {"bar deny": len(denied)}
    axis = [text.text for text in browser.find_elements(By.CSS_SELECTOR, "#chart text")]
    assert "Decisions" in axis and "Day (UTC)" in axis
    shoot("search")

    # The export links carry the filters: the same rows, as CSV and as NDJSON.
    status, media, body = _fetch(
        browser, str(browser.find_element(By.ID, "export-csv").get_attribute("href"))
    )
    exported = list(csv.DictReader(io.StringIO(body)))
    assert (status, media.split(";")[0]) == (200, "text/csv")
    assert sorted(row["decision_id"] for row in exported) == sorted(
        d["decision_id"] for d in denied
    )
    assert {row["decision"] for row in exported} == {"deny"}
    status, media, body = _fetch(
        browser, str(browser.find_element(By.ID, "export-ndjson").get_attribute("href"))
    )
    lines = [json.loads(line) for line in body.splitlines()]
    assert (status, media) == (200, "application/x-ndjson")
    assert [line["decision_id"] for line in lines] == [row["decision_id"] for row in exported]

    # Every match of the person, a page at a time, each row once, the count on every page.
    browser.get(f"{base}/console?person={person}")
    seen: list[str] = []
    while True:
        assert browser.find_element(By.ID, "results-heading").text == (
            f"{len(everything)} matching decisions"
        )
        seen += _result_ids(browser)
        following = browser.find_elements(By.ID, "next-page")
        if not following:
            break
        following[0].click()
        wait.until(staleness_of(following[0]))
        assert f"person={person}" in browser.current_url
    assert seen == [row["decision_id"] for row in everything]  # newest first, none twice
    shoot("search-last-page")

    # A filter the vocabulary does not know is a 422 page naming it, not an empty list.
    refused = f"{base}/console?person={person}&field=criminal.nope"
    status, media, _ = _fetch(browser, refused)
    assert (status, media.split(";")[0]) == (422, "text/html")
    browser.get(refused)
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Invalid request")
    assert "'criminal.nope' is not a field" in browser.find_element(By.ID, "problem").text
    shoot("search-refused")


def test_a_decision_page_shows_the_whole_record_and_its_place_in_the_chain(
    scenario_service: ScenarioService, browser: webdriver.Chrome, shoot: Shoot
) -> None:
    case_ref = f"BG-{uuid.uuid4().hex[:8]}"
    decision_id = _emergency_over_objection(scenario_service, "P-201", case_ref)
    stored = scenario_service.server.get(f"/v1/audit/decisions/{decision_id}").json()
    _sign_in(browser, scenario_service)

    browser.get(f"{scenario_service.server.url}/console?case_ref={case_ref}")
    (link,) = browser.find_elements(By.CSS_SELECTOR, "#results tbody td:first-child a")
    link.click()
    WebDriverWait(browser, 15).until(url_contains(f"/console/decisions/{decision_id}"))
    record = browser.find_element(By.ID, "record").text
    assert "Blackpool Council Adult Social Care" in record and ADULTS in record
    assert "Safeguarding adults at risk" in record and "break-glass" in record
    assert "isa-adult-safeguarding" in record
    assert "r-objection-health" in browser.find_element(By.ID, "objection-overridden").text
    assert browser.find_element(By.ID, "obligations").text == "none"
    context = browser.find_element(By.ID, "context").text
    for value in (case_ref, "sw.browser", stored["justification"], stored["client"]):
        assert value in context
    assert stored["request_id"] in context
    chain = browser.find_element(By.ID, "chain").text
    for key in ("seq", "chain_version", "prev_hash", "row_hash"):
        assert str(stored[key]) in chain
    assert "Not reviewed yet." in browser.find_element(By.CSS_SELECTOR, "table.reviews").text

    browser.find_element(By.ID, "verify").click()
    verified = WebDriverWait(browser, 60).until(
        visibility_of_element_located((By.ID, "verification"))
    )
    assert verified.text.startswith("Verified: every row from the chain's start through this one")
    shoot("decision")


def test_a_break_glass_permit_is_reviewed_by_a_named_person(
    scenario_service: ScenarioService, browser: webdriver.Chrome, shoot: Shoot
) -> None:
    case_ref = f"BG-{uuid.uuid4().hex[:8]}"
    decision_id = _emergency_over_objection(scenario_service, "P-201", case_ref)
    _sign_in(browser, scenario_service)
    browser.get(f"{scenario_service.server.url}/console/break-glass")

    entry = browser.find_element(By.ID, f"review-{decision_id}")
    text = entry.text
    for shown in (
        "Safeguarding adults at risk",
        case_ref,
        "isa-adult-safeguarding version 1",
        "ago",
        "Credible threat of suicide",
    ):
        assert shown in text
    assert entry.find_element(By.CSS_SELECTOR, "dd.overridden").text == "r-objection-health"
    radios = entry.find_elements(By.CSS_SELECTOR, "input[name=outcome]")
    assert len(radios) == 2 and not any(radio.is_selected() for radio in radios)
    form = entry.find_element(By.CSS_SELECTOR, "form.review")
    reviewer = entry.find_element(By.CSS_SELECTOR, "input[name=reviewer]")
    assert reviewer.get_attribute("required") == "true"
    note = entry.find_element(By.CSS_SELECTOR, "textarea[name=note]")
    note.send_keys("GP's report confirmed; proportionate")
    assert not browser.execute_script("return arguments[0].checkValidity()", form)  # no choice
    entry.find_element(By.CSS_SELECTOR, "input[value=not-justified]").click()
    assert not browser.execute_script("return arguments[0].checkValidity()", form)  # no one
    reviewer.send_keys("A. Shah (Caldicott guardian)")
    shoot("break-glass-pending")
    form.find_element(By.TAG_NAME, "button").click()

    WebDriverWait(browser, 15).until(url_contains("tab=reviewed"))
    reviewed = browser.find_element(By.ID, f"review-{decision_id}")
    (row,) = _cells(reviewed.find_element(By.CSS_SELECTOR, "table.reviews"))
    assert row[1:] == [
        "A. Shah (Caldicott guardian)",
        scenario_service.server.client_id,
        "not-justified",
        "GP's report confirmed; proportionate",
    ]
    tab = browser.find_element(By.ID, "tab-reviewed")
    assert tab.get_attribute("aria-current") == "page"
    shoot("break-glass-reviewed")
    browser.find_element(By.ID, "tab-pending").click()
    WebDriverWait(browser, 15).until(url_contains("tab=pending"))
    assert not browser.find_elements(By.ID, f"review-{decision_id}")
    browser.find_element(By.ID, "tab-overdue").click()
    WebDriverWait(browser, 15).until(url_contains("tab=overdue"))
    assert browser.find_element(By.ID, "empty").text == "Nothing is overdue."


def test_a_subject_access_report_prints_without_its_form(
    scenario_service: ScenarioService, browser: webdriver.Chrome, shoot: Shoot
) -> None:
    person = f"P-SAR-{uuid.uuid4().hex[:8]}"
    server = scenario_service.server
    objection = server.post(
        "/v1/register/restrictions",
        json={
            "person": person,
            "kind": "objection",
            "recipients": [ADULTS],
            "fields": ["health"],
            "reason": "the person objected in writing",
        },
    )
    assert objection.status_code == 201, objection.text
    _decide(scenario_service, person, ["criminal.convictions", "identity.name"], age=15)
    decision_id = _emergency_over_objection(scenario_service, person, "BG-SAR")
    reviewed = server.post(
        f"/v1/audit/break-glass/{decision_id}/reviews",
        json={"outcome": "justified", "note": "risk to life", "reviewer": "J. Okafor"},
    )
    assert reviewed.status_code == 201, reviewed.text
    mash_terms = load_yaml(SCENARIO / "agreements" / "isa-blackpool-mash.yaml")["lawful_basis"]
    adult_terms = load_yaml(SCENARIO / "agreements" / "isa-adult-safeguarding.yaml")["lawful_basis"]

    _sign_in(browser, scenario_service)
    browser.find_element(By.LINK_TEXT, "Subject access").click()
    browser.find_element(By.ID, "person").send_keys(person)
    browser.find_element(By.ID, "run-report").click()
    WebDriverWait(browser, 15).until(url_contains(f"person={person}"))
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Subject access report: {person}"
    page = browser.find_element(By.ID, "main").text
    assert "3 decisions about this person: 3 permitted, 0 denied" in page
    assert "shared" not in page.lower()
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "section.group h3")]
    assert headings == [
        f"Blackpool Council Adult Social Care for Safeguarding adults at risk {ADULTS} for "
        "safeguarding.adults",
        f"Blackpool Council Children's Services for Safeguarding children {CHILDREN} for "
        "safeguarding.children",
    ]
    # Article 9 where a special-category field was permitted, 10 where a criminal-offence one.
    adults, children = (
        _cells(table) for table in browser.find_elements(By.CSS_SELECTOR, "table.basis")
    )
    assert [row[1:5] for row in adults] == [
        ["1", adult_terms["article6"], adult_terms["article9"], "not used"]
    ]
    assert [row[1:5] for row in children] == [
        ["1", mash_terms["article6"], "not used", mash_terms["article10"]]
    ]
    (register,) = _cells(browser.find_element(By.ID, "register"))
    assert register[:2] == [objection.json()["id"], "objection"] and register[-1] == "yes"
    emergency = browser.find_element(By.ID, f"emergency-{decision_id}")
    assert "over objection" in emergency.text
    (review,) = _cells(emergency.find_element(By.CSS_SELECTOR, "table.reviews"))
    assert review[1:4] == ["J. Okafor", server.client_id, "justified"]
    shoot("subject-access")

    form = browser.find_element(By.ID, "report-form")
    assert form.is_displayed()
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    assert not form.is_displayed()
    assert not browser.find_element(By.TAG_NAME, "header").is_displayed()
    assert browser.find_element(By.TAG_NAME, "h1").is_displayed()
    assert browser.find_element(By.ID, "register").is_displayed()
    shoot("subject-access-print")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})


def test_the_agreements_page_shows_status_validity_review_dates_and_history(
    scenario_service: ScenarioService, browser: webdriver.Chrome, shoot: Shoot
) -> None:
    server = scenario_service.server
    revoked = server.post(
        "/v1/agreements/isa-health-schools-draft/revoke",
        json={"reason": "superseded before it was signed"},
    )
    assert revoked.status_code == 201, revoked.text
    versions = server.get("/v1/agreements/isa-health-schools-draft/versions").json()
    assert [v["created_by"] for v in versions] == ["cli", server.client_id]
    _sign_in(browser, scenario_service)
    browser.find_element(By.LINK_TEXT, "Agreements").click()
    WebDriverWait(browser, 15).until(url_contains("/console/agreements"))

    def row(agreement_id: str) -> WebElement:
        return browser.find_element(By.ID, f"agreement-{agreement_id}")

    lapsed = row("isa-probation-police-2020")
    assert lapsed.find_element(By.CLASS_NAME, "review-by").text == "2020-07-01 review overdue"
    assert lapsed.find_element(By.CLASS_NAME, "status").text == "active, not in force"
    future = row("isa-police-housing-future")
    assert future.find_element(By.CLASS_NAME, "review-by").text == "2098-06-01"
    assert row("isa-housing-police").find_element(By.CLASS_NAME, "status").text == "suspended"
    mash = row("isa-blackpool-mash").text
    assert "active, in force" in mash and "Blackpool Council Children's Services" in mash
    assert row("isa-health-schools-draft").find_element(By.CLASS_NAME, "status").text == "revoked"
    history = browser.find_element(By.CSS_SELECTOR, "#history-isa-health-schools-draft table")
    assert [cells[:4] + cells[5:] for cells in _cells(history)] == [
        [str(v["version"]), v["change"], v["status"], v["created_by"], v["reason"]]
        for v in versions
    ]
    shoot("agreements")


def test_the_access_map_draws_who_may_see_what_and_the_filters_narrow_it(
    scenario_service: ScenarioService, browser: webdriver.Chrome, shoot: Shoot
) -> None:
    mash = "isa-blackpool-mash"
    answer = scenario_service.server.get("/v1/access-map").json()
    _sign_in(browser, scenario_service)
    browser.find_element(By.LINK_TEXT, "Access map").click()
    WebDriverWait(browser, 15).until(url_contains("/console/access-map"))

    def drawn() -> set[tuple[str, str, str]]:
        return {
            (
                str(flow.get_attribute("data-holder")),
                str(flow.get_attribute("data-requester")),
                str(flow.get_attribute("data-agreement")),
            )
            for flow in browser.find_elements(By.CSS_SELECTOR, "#access-map g.flow")
        }

    # One arrow per flow the API answers; holders on the left, requesters on the right.
    flows = {(f["holder"], f["requester"], f["agreement_id"]) for f in answer["flows"]}
    assert drawn() == flows and len(flows) == 12
    nodes = browser.find_elements(By.CSS_SELECTOR, "#access-map g.node")
    placed = {(n.get_attribute("class"), n.get_attribute("data-agency")) for n in nodes}
    assert placed == {("node holder", f[0]) for f in flows} | {
        ("node requester", f[1]) for f in flows
    }
    police = browser.find_element(By.ID, f"holder-{POLICE}")
    assert "Lancashire Constabulary" in str(police.get_attribute("textContent"))
    x = {n.get_attribute("data-agency"): n.rect["x"] for n in nodes}
    assert x[POLICE] < x[CHILDREN]
    # The MASH arrow from the police: criminal, special-category and personal strands, an
    # arrowhead, and a label naming the agreement and whose data.
    arrow = browser.find_element(By.ID, f"flow-{POLICE}--{CHILDREN}--{mash}")
    strands = arrow.find_elements(By.CSS_SELECTOR, "path.strand")
    assert {s.get_attribute("class") for s in strands} == {
        "strand personal",
        "strand special-category",
        "strand criminal-offence",
    }
    spine = arrow.find_element(By.CSS_SELECTOR, "path.arrow")
    assert spine.get_attribute("marker-end") == "url(#arrowhead)"
    label = browser.find_element(
        By.CSS_SELECTOR, f'g.label[data-flow="{POLICE}--{CHILDREN}--{mash}"] text'
    )
    assert label.text == f"{mash} · children (under 18) · break-glass"
    labels = browser.find_elements(By.CSS_SELECTOR, "#access-map g.label tspan.agreement")
    assert sorted(str(t.get_attribute("textContent")) for t in labels) == sorted(
        agreement for _, _, agreement in flows
    )
    legend = str(browser.find_element(By.ID, "access-map").get_attribute("textContent"))
    assert all(kind in legend for kind in ("personal", "special category", "criminal offence"))
    # The table lists the same flows, for screen readers and keyboards.
    rows = _cells(browser.find_element(By.ID, "flows"))
    assert len(rows) == len(flows)
    assert [
        "Lancashire Constabulary",
        "Blackpool Council Children's Services",
        f"{mash} v1",
        "personal, special-category, criminal-offence",
        "Safeguarding children",
        "children (under 18)",
        "not needed",
    ] in [row[:7] for row in rows]
    shoot("access-map")

    # Filtered by agency and purpose (display names in the drop-downs): the one flow left.
    Select(browser.find_element(By.ID, "f-agency")).select_by_visible_text(
        "Lancashire Constabulary"
    )
    Select(browser.find_element(By.ID, "f-purpose")).select_by_value("safeguarding.children")
    browser.find_element(By.ID, "run-map").click()
    WebDriverWait(browser, 15).until(url_contains(f"agency={POLICE}"))
    assert "purpose=safeguarding.children" in browser.current_url
    assert drawn() == {(POLICE, CHILDREN, mash)}
    assert browser.find_element(By.ID, "map-heading").text == "1 flow"
    assert len(_cells(browser.find_element(By.ID, "flows"))) == 1
    shoot("access-map-filtered")


def test_every_page_reflows_at_200_percent_and_works_from_the_keyboard(
    scenario_service: ScenarioService, browser: webdriver.Chrome, shoot: Shoot
) -> None:
    decision_id = _emergency_over_objection(scenario_service, "P-201", "BG-ZOOM")
    _sign_in(browser, scenario_service)
    # 200 % zoom of a 1280-pixel-wide window: 640 CSS pixels across.
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 640, "height": 900, "deviceScaleFactor": 2, "mobile": False},
    )
    pages = {
        "search": "/console?person=P-201",
        "decision": f"/console/decisions/{decision_id}",
        "break-glass": "/console/break-glass",
        "subject-access": "/console/subject-access?person=P-201",
        "agreements": "/console/agreements",
        "access-map": "/console/access-map",
    }
    for name, path in pages.items():
        browser.get(f"{scenario_service.server.url}{path}")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} scrolls sideways at 200 %"
        unlabelled = browser.execute_script(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
            ".filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.name)"
        )
        assert unlabelled == [], f"{name}: inputs without a label"
        headless = browser.execute_script(
            "return [...document.querySelectorAll('table')]"
            ".filter(t => !t.querySelector('thead th[scope=col]')).length"
        )
        assert headless == 0, f"{name}: a table without column headers"

        # The first Tab reaches the skip link, which moves focus to the main content.
        ActionChains(browser).send_keys(Keys.TAB).perform()
        skip = browser.switch_to.active_element
        assert skip.text == "Skip to main content"
        assert skip.value_of_css_property("outline-style") == "solid"
        assert float(skip.value_of_css_property("outline-width").removesuffix("px")) >= 3
        skip.send_keys(Keys.ENTER)
        assert browser.switch_to.active_element.get_attribute("id") == "main"
        ActionChains(browser).send_keys(Keys.TAB).perform()
        focused = browser.switch_to.active_element
        assert focused.tag_name in ("a", "input", "select", "button", "textarea")
        assert focused.value_of_css_property("outline-style") == "solid"
        shoot(f"{name}-200-percent")
