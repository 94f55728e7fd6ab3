"""The auditor console in headless Chromium (Debian's chromium and chromium-driver)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import (
    url_contains,
    visibility_of_element_located,
)
from selenium.webdriver.support.wait import WebDriverWait

from tests.conftest import ScenarioService

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = Path(tempfile.gettempdir()) / "accord-console.png"  # for a person to look at

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


def _decide(service: ScenarioService, person: str, field: str, age: int) -> None:
    response = service.server.post(
        "/v1/decisions",
        json={
            "requester": "la.blackpool.childrens-services",
            "holder": "police.lancashire",
            "subject": {"id": person, "attributes": {"age": age}},
            "field": field,
            "purpose": "safeguarding.children",
            "context": {"user": "sw.browser", "case_ref": "CP-77"},
        },
    )
    assert response.status_code == 200


def test_an_auditor_signs_in_searches_and_sees_results_and_chart(
    scenario_service: ScenarioService, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    for field in ("criminal.convictions", "criminal.intelligence", "identity.name"):
        _decide(scenario_service, "P-BROWSER-1", field, 12)
    _decide(scenario_service, "P-BROWSER-2", "identity.name", 30)
    base = scenario_service.server.url

    wait = WebDriverWait(browser, 15)
    browser.get(f"{base}/console")
    assert browser.current_url.endswith("/console/login")
    browser.find_element(By.ID, "key").send_keys("not-a-key")
    browser.find_element(By.ID, "sign-in").click()
    assert "unknown" in wait.until(visibility_of_element_located((By.ID, "error"))).text

    browser.find_element(By.ID, "key").send_keys(scenario_service.server.key)
    browser.find_element(By.ID, "sign-in").click()
    person = wait.until(visibility_of_element_located((By.ID, "f-person")))
    person.send_keys("P-BROWSER-1")
    browser.find_element(By.ID, "run-search").click()
    wait.until(url_contains("person=P-BROWSER-1"))

    rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    cells = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert len(cells) == 3 and {row[1] for row in cells} == {"P-BROWSER-1"}
    assert sorted(row[6] for row in cells) == ["deny", "permit", "permit"]
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart rect.bar")
    counts = {bar.get_attribute("class"): int(bar.get_attribute("data-count") or 0) for bar in bars}
    assert counts == {"bar permit": 2, "bar deny": 1}
    browser.save_screenshot(str(SCREENSHOT))

    browser.get(f"{base}/console/subject-access?person=P-BROWSER-1")
    assert "Subject access report: P-BROWSER-1" in browser.find_element(By.TAG_NAME, "h1").text
    assert "la.blackpool.childrens-services for safeguarding.children" in browser.page_source
