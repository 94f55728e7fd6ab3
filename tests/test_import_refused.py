"""A corrupt file refuses a whole import while a server decides on the sample policies.

The import folder holds the sample agreements with changes that would alter
answers (a grant narrowed, a draft activated, a new agreement) and one corrupt
file, sorted last so every valid change is read first. The import must fail
naming that file, store nothing, leave the policy revision alone, and the
running server must keep giving the same answers. The same folder without the
corrupt file then does change the answers: the changes were real.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store.database import make_engine
from app.store.revisions import read_revision
from app.store.tables import AgreementVersion, ChangeRecord
from tests.conftest import REPO, Server, accord, import_agreements_from, load_yaml

SAMPLE_AGREEMENTS = REPO / "policies" / "agreements"
# JSON-ready: YAML dates (birth dates) become ISO strings, as a client would send them
SAMPLE_CASES = json.loads(
    json.dumps(load_yaml(REPO / "policies" / "tests" / "riverton.yaml"), default=str)
)
REQUESTS = [case["request"] for case in SAMPLE_CASES["cases"] if "status" not in case["expect"]]
BATCHES = [batch["request"] for batch in SAMPLE_CASES["batches"]]

CORRUPT = {
    # (file text, exit code, what stderr must name besides the file)
    "invalid-yaml": ("id: isa-riverton-broken\ngrants: [unclosed\n", 1, "while parsing"),
    "not-an-agreement": ("- a list\n- not a mapping\n", 1, "must be a mapping"),
    "invalid-agreement": (
        yaml.safe_dump(
            {
                "id": "isa-riverton-broken",
                "title": "Names a field the vocabulary does not have",
                "status": "active",
                "valid_from": "2025-01-01",
                "valid_until": "2099-01-01",
                "providers": ["police"],
                "recipients": ["edu.riverton-schools"],
                "lawful_basis": {"article6": "public-task"},
                "grants": [{"purposes": ["safeguarding"], "fields": ["identity.shoe-size"]}],
            }
        ),
        1,
        "identity.shoe-size",
    ),
}


def _changed_agreements(folder: Path) -> None:
    """The sample agreements, with three changes each of which moves some answer."""
    shutil.copytree(SAMPLE_AGREEMENTS, folder)
    mash = load_yaml(folder / "isa-riverton-mash.yaml")
    mash["grants"][0]["fields"].remove("criminal.convictions")
    (folder / "isa-riverton-mash.yaml").write_text(yaml.safe_dump(mash))
    housing = load_yaml(folder / "isa-riverton-housing-asb.yaml")
    housing["status"] = "active"
    (folder / "isa-riverton-housing-asb.yaml").write_text(yaml.safe_dump(housing))
    schools = {
        **mash,
        "id": "isa-riverton-schools",
        "title": "Police to schools",
        "providers": ["police"],
        "recipients": ["edu.riverton-schools"],
        "grants": [{"purposes": ["safeguarding.children"], "fields": ["identity.name"]}],
    }
    schools.pop("break_glass", None)
    (folder / "isa-riverton-schools.yaml").write_text(yaml.safe_dump(schools))


def _answers(server: Server) -> list[Any]:
    """What the server answers now, without the parts that differ on every call."""
    answers: list[Any] = []
    with server.client() as client:
        for request in REQUESTS:
            response = client.post("/v1/decisions", json=request)
            assert response.status_code == 200, response.text
            answers.append(_comparable(response.json()))
        for request in BATCHES:
            response = client.post("/v1/decisions/batch", json=request)
            assert response.status_code == 200, response.text
            answers.append([_comparable(item) for item in response.json()["decisions"]])
    return answers


def _comparable(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key not in {"decision_id", "decided_at"}}


def _stored(url: str) -> tuple[list[tuple[str, int, str]], int, int]:
    """Agreement versions, policy revision and change-log length, read from the database."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            versions = [
                (row.agreement_id, row.version, row.content_sha256)
                for row in session.scalars(
                    select(AgreementVersion).order_by(
                        AgreementVersion.agreement_id, AgreementVersion.version
                    )
                )
            ]
            changes = session.scalar(select(func.count()).select_from(ChangeRecord)) or 0
            return versions, read_revision(session), changes
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("corruption", sorted(CORRUPT))
def test_a_corrupt_file_refuses_the_import_and_the_server_answers_as_before(
    corruption: str,
    database_url: str,
    server_factory: Callable[[dict[str, str]], Server],
    tmp_path: Path,
) -> None:
    env = {"ACCORD_DATABASE_URL": database_url, "ACCORD_POLICY_POLL_SECONDS": "0.2"}
    import_agreements_from(env, SAMPLE_AGREEMENTS)
    server = server_factory(env)
    before = _answers(server)
    stored = _stored(database_url)
    revision = server.get("/readyz").json()["policy_revision"]
    assert revision == stored[1]

    folder = tmp_path / "agreements"
    _changed_agreements(folder)
    text, exit_code, named = CORRUPT[corruption]
    (folder / "zz-corrupt.yaml").write_text(text)
    refused = accord("agreements", "import", str(folder), env=env, check=False)
    assert refused.returncode == exit_code, refused.stdout + refused.stderr
    assert "zz-corrupt.yaml" in refused.stderr and named in refused.stderr, refused.stderr
    assert refused.stdout == ""  # no "new version" line: nothing was stored

    time.sleep(1)  # five policy polls: time for a revision change to show
    assert _stored(database_url) == stored
    assert server.get("/readyz").json()["policy_revision"] == revision
    assert _answers(server) == before

    (folder / "zz-corrupt.yaml").unlink()  # the control: the valid changes alone do apply
    accord("agreements", "import", str(folder), env=env)
    deadline = time.monotonic() + 5
    while server.get("/readyz").json()["policy_revision"] == revision:
        assert time.monotonic() < deadline, "the valid import was not picked up"
        time.sleep(0.1)
    after = _answers(server)
    moved = {
        request["field"]
        for request, old, new in zip(REQUESTS, before, after, strict=False)
        if old["decision"] != new["decision"]
    }
    assert moved == {"criminal.convictions", "housing.tenancy", "identity.name"}
