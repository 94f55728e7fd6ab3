"""A replica's live state follows the database: revoked keys even when the policy cannot
load, and a database restored to an older revision."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine

from app.runtime.callers import key_digest
from app.runtime.live_policy import LivePolicy
from app.store.database import make_engine, upgrade_schema
from tests.conftest import REPO, SAMPLE_VOCABULARY, accord, create_key

MODEL = REPO / "policies" / "model.conf"
AGREEMENTS = REPO / "policies" / "agreements"


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
    live = LivePolicy(engine, vocabulary_file=vocabulary, model_file=MODEL)
    live.refresh()
    revision = live.current.revision
    assert key_digest(key) in live.callers

    # A vocabulary the agreements no longer fit: every reload from now on fails.
    document = yaml.safe_load(vocabulary.read_text())
    document["fields"] = [f for f in document["fields"] if not f["id"].startswith("criminal")]
    vocabulary.write_text(yaml.safe_dump(document))
    accord("clients", "revoke", "partner-x", env=env)

    with pytest.raises(Exception, match="criminal"):
        live.refresh()
    assert live.current.revision == revision, "the previous policy stays live"
    assert key_digest(key) not in live.callers, "the revoked key still authenticates"


def test_a_replica_follows_a_database_restored_to_an_older_revision(tmp_path: Path) -> None:
    path = tmp_path / "accord.db"
    url = f"sqlite:///{path}"
    upgrade_schema(url)
    env = _sample(url, SAMPLE_VOCABULARY)
    engine = make_engine(url)
    try:
        live = LivePolicy(engine, vocabulary_file=SAMPLE_VOCABULARY, model_file=MODEL)
        live.refresh()
        backed_up = live.current.revision
        with sqlite3.connect(path) as source, sqlite3.connect(tmp_path / "backup.db") as copy:
            source.backup(copy)

        key = create_key(env, "made-after-the-backup", scopes="decide", agencies="police.riverton")
        live.refresh()
        assert live.current.revision > backed_up and key_digest(key) in live.callers

        engine.dispose()
        with sqlite3.connect(tmp_path / "backup.db") as copy, sqlite3.connect(path) as target:
            copy.backup(target)  # the restore
        live.refresh()
        assert live.current.revision == backed_up
        assert key_digest(key) not in live.callers, "a client the database no longer has"
    finally:
        engine.dispose()
