"""A replica's live state follows the database: revoked keys without a compile and even
when the policy cannot load, and a database restored to older revisions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.runtime.callers import key_digest
from app.runtime.live_policy import LivePolicy
from app.store.database import make_engine, upgrade_schema
from app.store.revisions import POLICY, bump_revision
from tests.conftest import REPO, SAMPLE_VOCABULARY, accord, create_key

MODEL = REPO / "policies" / "model.conf"
AGREEMENTS = REPO / "policies" / "agreements"


def _compiles() -> float:
    return REGISTRY.get_sample_value("accord_policy_compiles_total") or 0.0


def _sample(database_url: str, vocabulary: Path) -> dict[str, str]:
    env = {"ACCORD_DATABASE_URL": database_url, "ACCORD_VOCABULARY_FILE": str(vocabulary)}
    accord("agreements", "import", str(AGREEMENTS), env=env)
    return env


@pytest.mark.slow
def test_a_revoked_key_stops_working_even_when_the_new_policy_cannot_load(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    vocabulary = tmp_path / "vocabulary.yaml"
    vocabulary.write_text(SAMPLE_VOCABULARY.read_text())
    env = _sample(database_url, vocabulary)
    key = create_key(env, "partner-x", scopes="decide", agencies="police.riverton")
    other = create_key(env, "partner-y", scopes="decide", agencies="police.riverton")
    live = LivePolicy(engine, vocabulary_file=vocabulary, model_file=MODEL)
    live.refresh()
    revision = live.current.revision
    assert key_digest(key) in live.callers and key_digest(other) in live.callers

    # A vocabulary the agreements no longer fit: every compile from now on fails.
    document = yaml.safe_load(vocabulary.read_text())
    document["fields"] = [f for f in document["fields"] if not f["id"].startswith("criminal")]
    vocabulary.write_text(yaml.safe_dump(document))

    # A revocation alone moves only the client revision: nothing is compiled.
    compiles = _compiles()
    accord("clients", "revoke", "partner-x", env=env)
    live.refresh()
    assert _compiles() == compiles
    assert live.current.revision == revision
    assert key_digest(key) not in live.callers, "the revoked key still authenticates"

    # A revocation beside a policy change that cannot compile still takes effect.
    accord("clients", "revoke", "partner-y", env=env)
    with Session(engine) as session, session.begin():
        bump_revision(session, POLICY)
    with pytest.raises(Exception, match="criminal"):
        live.refresh()
    assert _compiles() == compiles + 1
    assert live.current.revision == revision, "the previous policy stays live"
    assert key_digest(other) not in live.callers, "the revoked key still authenticates"


def test_a_replica_follows_a_database_restored_to_an_older_revision(tmp_path: Path) -> None:
    path = tmp_path / "accord.db"
    url = f"sqlite:///{path}"
    upgrade_schema(url)
    env = _sample(url, SAMPLE_VOCABULARY)
    engine = make_engine(url)
    try:
        live = LivePolicy(engine, vocabulary_file=SAMPLE_VOCABULARY, model_file=MODEL)
        live.refresh()
        backed_up = live.current.revision, live.clients.revision
        assert backed_up[1] is not None
        with sqlite3.connect(path) as source, sqlite3.connect(tmp_path / "backup.db") as copy:
            source.backup(copy)

        key = create_key(env, "made-after-the-backup", scopes="decide", agencies="police.riverton")
        live.refresh()
        assert key_digest(key) in live.callers
        assert live.current.revision == backed_up[0], "a new key moves no policy revision"
        assert live.clients.revision is not None and live.clients.revision > backed_up[1]

        engine.dispose()
        with sqlite3.connect(tmp_path / "backup.db") as copy, sqlite3.connect(path) as target:
            copy.backup(target)  # the restore
        live.refresh()
        assert (live.current.revision, live.clients.revision) == backed_up
        assert key_digest(key) not in live.callers, "a client the database no longer has"
    finally:
        engine.dispose()
