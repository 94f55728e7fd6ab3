"""`accord agreements import` never undoes a change made over the API unless forced, and
`validate` and `import` name every bad file of a folder in one run."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.store.tables import AgreementVersion, ChangeRecord
from tests.conftest import SCENARIO, Server, accord, import_agreements_from, scenario_env

SUSPENDED = "isa-adult-safeguarding"
# file name -> (text, what the error names: file:line:column and the problem)
SYNTAX_ERRORS = {
    "colon.yaml": ("id: isa-colon\ntitle: a: b\n", "colon.yaml:2:9: mapping values are not"),
    "unclosed.yaml": (
        "id: isa-unclosed\ngrants: [unclosed\n",
        "unclosed.yaml:3:1: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence at 2:9)",
    ),
}


def _stored(engine: Engine) -> tuple[int, int]:
    """How many agreement versions and change-log entries the database holds."""
    with Session(engine) as session:
        versions = session.scalar(select(func.count()).select_from(AgreementVersion))
        changes = session.scalar(select(func.count()).select_from(ChangeRecord))
        return versions or 0, changes or 0


@pytest.mark.slow
def test_a_suspension_over_the_api_survives_a_reimport_unless_forced(
    database_url: str,
    engine: Engine,
    server_factory: Callable[[dict[str, str]], Server],
    tmp_path: Path,
) -> None:
    env = scenario_env(database_url)
    folder = tmp_path / "agreements"
    shutil.copytree(SCENARIO / "agreements", folder)
    import_agreements_from(env, folder)
    server = server_factory(env)
    path = f"/v1/agreements/{SUSPENDED}"
    suspended = server.post(f"{path}/suspend", json={"reason": "breach under review"})
    assert (suspended.json()["version"], suspended.json()["status"]) == (2, "suspended")
    stored = _stored(engine)

    refused = accord("agreements", "import", str(folder), env=env, check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stdout == ""
    assert f"{SUSPENDED}.yaml: '{SUSPENDED}' was changed over the API" in refused.stderr
    assert f"v2 suspended by {server.client_id} at " in refused.stderr
    assert "(breach under review); --force imports over that" in refused.stderr
    seeded = accord("agreements", "import", "--if-empty", str(folder), env=env)
    assert "nothing imported" in seeded.stdout
    assert _stored(engine) == stored
    assert server.get(path).json()["status"] == "suspended"

    forced = accord(
        "agreements", "import", str(folder), "--force", "--actor", "ig.officer", env=env
    )
    assert f"{SUSPENDED} v3: new version, forced" in forced.stdout
    assert forced.stdout.count("unchanged, nothing stored") == 6
    current = server.get(path).json()
    assert (current["version"], current["status"], current["change"]) == (
        3,
        "active",
        "force-imported",
    )
    assert f"forced over v2 suspended by {server.client_id}" in current["reason"]
    newest = server.get("/v1/changes", params={"target_id": SUSPENDED}).json()["items"][0]
    assert (newest["action"], newest["actor"]) == ("agreement.force-imported", "ig.officer")

    # A revocation is final: not even --force brings the agreement back.
    revoked = server.post(f"{path}/revoke", json={"reason": "superseded"})
    assert revoked.json()["status"] == "revoked"
    stored = _stored(engine)
    final = accord("agreements", "import", str(folder), "--force", env=env, check=False)
    assert final.returncode == 1
    assert f"'{SUSPENDED}' is revoked; it cannot change, not even with --force" in final.stderr
    assert _stored(engine) == stored
    assert server.get(path).json()["status"] == "revoked"


def _bad_folder(tmp_path: Path) -> Path:
    """Two files with YAML syntax errors, one with a schema error, one valid."""
    folder = tmp_path / "agreements"
    folder.mkdir()
    for name, (text, _) in SYNTAX_ERRORS.items():
        (folder / name).write_text(text)
    shutil.copy(SCENARIO / "invalid" / "unknown-field.yaml", folder / "unknown-field.yaml")
    shutil.copy(SCENARIO / "agreements" / "isa-early-help.yaml", folder / "valid.yaml")
    return folder


def _names_every_bad_file(stderr: str) -> None:
    for _, named in SYNTAX_ERRORS.values():
        assert named in stderr, stderr
    assert "unknown-field.yaml: " in stderr and "health.dental" in stderr, stderr
    assert "valid.yaml" not in stderr.replace("unknown-field.yaml", ""), stderr


@pytest.mark.slow
def test_validate_names_every_bad_file_with_the_place_of_a_syntax_error(tmp_path: Path) -> None:
    folder = _bad_folder(tmp_path)
    env = scenario_env("sqlite:///unused.db")
    result = accord("agreements", "validate", str(folder), env=env, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    _names_every_bad_file(result.stderr)
    assert result.stderr.count("invalid ") == 3
    assert result.stdout == f"ok {folder / 'valid.yaml'}: isa-early-help (active)\n"


def test_an_import_names_every_bad_file_and_stores_nothing(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    folder = _bad_folder(tmp_path)
    result = accord(
        "agreements", "import", str(folder), env=scenario_env(database_url), check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    _names_every_bad_file(result.stderr)
    assert _stored(engine) == (0, 0)
