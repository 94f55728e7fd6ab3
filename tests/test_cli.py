"""The `accord` command: validate, import (all or nothing, versioned), export for Casbin."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import casbin
import pytest
import yaml
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.store.revisions import read_revision
from app.store.tables import AgreementVersion, ChangeRecord
from tests.conftest import SCENARIO, Server, accord, load_yaml, scenario_env

INVALID = sorted((SCENARIO / "invalid").glob("*.yaml"))


def _versions(engine: Engine) -> list[tuple[str, int]]:
    with Session(engine) as session:
        rows = session.execute(select(AgreementVersion.agreement_id, AgreementVersion.version))
        return sorted((agreement_id, version) for agreement_id, version in rows)


def _revision(engine: Engine) -> int:
    with engine.connect() as connection:
        return read_revision(connection)


def _changes(engine: Engine) -> list[tuple[str, str]]:
    with Session(engine) as session:
        query = select(ChangeRecord.action, ChangeRecord.target_id).order_by(ChangeRecord.seq)
        return [(action, target_id) for action, target_id in session.execute(query)]


@pytest.mark.slow
def test_validate_names_each_invalid_file_and_its_reason() -> None:
    env = scenario_env("sqlite:///unused.db")
    result = accord("agreements", "validate", str(SCENARIO / "invalid"), env=env, check=False)
    assert result.returncode == 1
    for path in INVALID:
        expected = path.read_text().splitlines()[0].removeprefix("# expect: ").strip()
        line = next(line for line in result.stderr.splitlines() if path.name in line)
        assert expected in line
    ok = accord("agreements", "validate", str(SCENARIO / "agreements"), env=env)
    assert ok.stdout.count("ok ") == 7


def test_an_import_with_one_bad_file_stores_nothing(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    folder = tmp_path / "agreements"
    shutil.copytree(SCENARIO / "agreements", folder)
    shutil.copy(SCENARIO / "invalid" / "unknown-field.yaml", folder / "zz-bad.yaml")
    result = accord(
        "agreements", "import", str(folder), env=scenario_env(database_url), check=False
    )
    assert result.returncode == 1
    assert "zz-bad.yaml" in result.stderr and "health.dental" in result.stderr
    assert _versions(engine) == []
    assert _revision(engine) == 0


@pytest.mark.slow
def test_reimport_makes_a_version_only_for_a_changed_agreement(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    env = scenario_env(database_url)
    folder = tmp_path / "agreements"
    shutil.copytree(SCENARIO / "agreements", folder)
    accord("agreements", "import", str(folder), env=env)
    first_revision = _revision(engine)
    changes = _changes(engine)
    unchanged = accord("agreements", "import", str(folder), env=env)
    assert unchanged.stdout.count("unchanged, nothing stored") == 7
    assert _revision(engine) == first_revision
    assert _changes(engine) == changes

    changed = folder / "isa-early-help.yaml"
    document = load_yaml(changed)
    document["title"] = "Early help, second edition"
    changed.write_text(yaml.safe_dump(document))
    accord("agreements", "import", str(folder), env=env)
    versions = _versions(engine)
    assert ("isa-early-help", 2) in versions and ("isa-early-help", 1) in versions
    assert ("isa-blackpool-mash", 2) not in versions
    assert _revision(engine) == first_revision + 1
    assert _changes(engine) == [*changes, ("agreement.imported", "isa-early-help")]


@pytest.mark.slow
def test_a_running_server_decides_on_a_new_version_within_a_second(
    database_url: str, server_factory: Callable[[dict[str, str]], Server], tmp_path: Path
) -> None:
    env = scenario_env(database_url)
    folder = tmp_path / "agreements"
    shutil.copytree(SCENARIO / "agreements", folder)
    accord("agreements", "import", str(folder), env=env)
    server = server_factory(env)
    request = {
        "requester": "la.blackpool.adult-services",
        "holder": "police.lancashire",
        "subject": {"id": "P-7", "attributes": {"age": 40}},
        "field": "criminal.convictions",
        "purpose": "safeguarding.adults",
    }
    first = server.post("/v1/decisions", json=request).json()
    assert (first["decision"], first["reasons"][0]["agreement_version"]) == ("permit", 1)

    changed = folder / "isa-adult-safeguarding.yaml"
    document = load_yaml(changed)
    document["status"] = "suspended"
    changed.write_text(yaml.safe_dump(document))
    accord("agreements", "import", str(changed), env=env)
    imported = time.monotonic()
    while True:
        answer = server.post("/v1/decisions", json=request).json()
        if answer["decision"] == "deny":
            break
        assert time.monotonic() - imported < 3, "the suspension was not picked up"
        time.sleep(0.05)
    assert answer["reasons"][0]["code"] == "agreement-not-in-force"
    assert answer["reasons"][0]["agreement_version"] == 2
    assert answer["policy_revision"] > first["policy_revision"]


@pytest.mark.slow
def test_export_is_a_casbin_model_and_policy_casbin_can_load(
    database_url: str, tmp_path: Path
) -> None:
    env = scenario_env(database_url)
    accord("agreements", "import", str(SCENARIO / "agreements"), env=env)
    accord("policy", "export", "--out", str(tmp_path / "export"), env=env)
    enforcer = casbin.Enforcer(
        str(tmp_path / "export" / "model.conf"), str(tmp_path / "export" / "policy.csv")
    )
    now = "2026-11-25T12:00:00Z"
    child = ("la.blackpool.childrens-services", "police.lancashire", "P-1")
    assert enforcer.enforce(
        *child, "criminal.convictions", "safeguarding.children", "012", "no", now
    )
    assert not enforcer.enforce(
        *child, "criminal.intelligence", "safeguarding.children", "012", "no", now
    )
    assert not enforcer.enforce(
        *child, "criminal.convictions", "safeguarding.children", "030", "no", now
    )


@pytest.mark.slow
def test_a_database_that_cannot_be_opened_is_a_clear_error_not_a_traceback(
    tmp_path: Path,
) -> None:
    env = {"ACCORD_DATABASE_URL": f"sqlite:///{tmp_path / 'no-such-folder' / 'accord.db'}"}
    result = accord("policy", "export", "--out", str(tmp_path / "out"), env=env, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: ACCORD_DATABASE_URL cannot be used: unable to open database file"
    )
