"""`accord policy test`: the sample partnership's tests pass; a changed expectation fails loudly."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import REPO, SCENARIO, accord, load_yaml

SAMPLE_TESTS = REPO / "policies" / "tests"
NO_DATABASE = {"ACCORD_DATABASE_URL": "sqlite:///unused-by-policy-test.db"}


def test_the_sample_partnership_passes_its_policy_tests() -> None:
    result = accord("policy", "test", str(SAMPLE_TESTS), env=NO_DATABASE)
    cases = sum(
        len(load_yaml(f).get("cases", [])) + len(load_yaml(f).get("batches", []))
        for f in SAMPLE_TESTS.glob("*.yaml")
    )
    assert result.stdout.strip().endswith(f"{cases} passed, 0 failed")


def test_the_shared_scenario_passes_as_a_policy_test() -> None:
    env = {**NO_DATABASE, "ACCORD_VOCABULARY_FILE": str(SCENARIO / "vocabulary.yaml")}
    result = accord(
        "policy",
        "test",
        str(SCENARIO / "cases.yaml"),
        "--agreements",
        str(SCENARIO / "agreements"),
        env=env,
    )
    assert result.stdout.strip().endswith("36 passed, 0 failed")


def test_a_changed_expectation_fails_with_a_readable_diff(tmp_path: Path) -> None:
    document = load_yaml(SAMPLE_TESTS / "riverton.yaml")
    case = document["cases"][1]
    assert case["expect"]["decision"] == "deny"
    case["expect"] = {**case["expect"], "decision": "permit", "reason": "agreement"}
    document["batches"][0]["expect"]["permitted"].remove("contact.phone")
    changed = tmp_path / "riverton.yaml"
    changed.write_text(yaml.safe_dump(document))

    result = accord("policy", "test", str(changed), env=NO_DATABASE, check=False)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"FAIL riverton.yaml: {case['name']}" in lines
    assert "    decision: expected permit, got deny" in lines
    assert "    reason: expected agreement, got field-not-covered" in lines
    assert "    permitted: not expected but permitted: contact.phone" in lines
    assert lines[-1].endswith("passed, 2 failed")
