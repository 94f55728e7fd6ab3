"""Tamper evidence against someone who can write to the database but does not hold the audit
signing key (issue 14, finding 4): each attack is done with direct SQL, as such a writer
would, and `accord audit verify` (or the same `verify_chain`) must detect it. On PostgreSQL
the attacker switches the append-only triggers off first, as a table owner can."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from app.audit.chain import GENESIS, ChainHead, chain_rows
from app.audit.integrity import purge_before, read_head, verify_chain
from app.audit.signing import KeyRing, SigningKeyError, load_public_key, public_path
from app.config import Settings
from app.main import create_app
from app.store.tables import AuditChainHead, AuditCheckpoint, AuditDecision
from tests.audit_rows import write_rows
from tests.conftest import (
    AUDIT_KEY_FILE,
    AUDIT_SIGNER,
    MASH_REQUEST,
    Server,
    accord,
    free_port,
    import_agreements_from,
    scenario_env,
)

ROWS = 60
TRIGGERS = (  # the append-only guards (migrations 0003 and 0004) an owner can switch off
    ("audit_decisions", "audit_decisions_append_only"),
    ("audit_checkpoints", "audit_checkpoints_append_only"),
    ("audit_chain_head", "audit_chain_head_forward_only"),
)


def _keys() -> KeyRing:
    """What an auditor trusts: the public key file alone."""
    return KeyRing([load_public_key(public_path(AUDIT_KEY_FILE))])


def _broken(engine: Engine, saved: list[ChainHead] | None = None) -> str | None:
    with engine.connect() as connection:
        result = verify_chain(connection, _keys(), saved or [])
    return None if result.broken is None else f"row {result.broken.seq}: {result.broken.problem}"


def _execute(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def _row(engine: Engine, seq: int) -> dict[str, Any]:
    with engine.connect() as connection:
        query = select(AuditDecision.__table__).where(AuditDecision.seq == seq)
        return dict(connection.execute(query).mappings().one())


def _head(engine: Engine) -> ChainHead:
    with engine.connect() as connection:
        return read_head(connection)


def _forge_checkpoint(
    engine: Engine, *, last_seq: int, last_hash: str, rows_removed: int, **extra: Any
) -> None:
    now = datetime.now(UTC)
    values = {
        "purged_before": now,
        "last_seq": last_seq,
        "last_hash": last_hash,
        "rows_removed": rows_removed,
        "created_at": now,
        "created_by": "dpo",
        **extra,
    }
    with engine.begin() as connection:
        connection.execute(insert(AuditCheckpoint).values(values))


def _rewrite(engine: Engine, seq: int, column: str, value: Any) -> None:
    """What a writer with the code but not the key does: change row `seq`, re-hash it and
    every row after it, and point the head at the new last hash (its signature unchanged)."""
    rows = [_row(engine, n) for n in range(seq, ROWS + 1)]
    rows[0][column] = value
    previous = _row(engine, seq - 1)["row_hash"] if seq > 1 else GENESIS
    rechained = chain_rows(
        [
            {k: v for k, v in row.items() if k not in ("seq", "prev_hash", "row_hash")}
            for row in rows
        ],
        after_seq=seq - 1,
        after_hash=previous,
    )
    with engine.begin() as connection:
        for row in rechained:
            connection.execute(
                update(AuditDecision)
                .where(AuditDecision.seq == row["seq"])
                .values(
                    {
                        column: row[column],
                        "prev_hash": row["prev_hash"],
                        "row_hash": row["row_hash"],
                    }
                )
            )
        connection.execute(update(AuditChainHead).values(last_hash=rechained[-1]["row_hash"]))


@pytest.fixture
def chain(engine: Engine) -> Iterator[Engine]:
    """ROWS signed rows, as the writer writes them; the guards off on PostgreSQL."""
    write_rows(engine, [datetime.now(UTC) - timedelta(minutes=ROWS - n) for n in range(ROWS)])
    assert _broken(engine) is None
    if engine.dialect.name == "postgresql":
        for table, trigger in TRIGGERS:
            _execute(engine, f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
    yield engine


def test_an_edited_row_behind_a_forged_checkpoint_is_detected(chain: Engine) -> None:
    _execute(chain, "UPDATE audit_decisions SET case_ref = 'CP-FORGED' WHERE seq = 30")
    assert "its content was changed" in (_broken(chain) or "")
    # The checkpoint "vouches" for rows up to 30 with row 30's stored hash.
    _forge_checkpoint(chain, last_seq=30, last_hash=_row(chain, 30)["row_hash"], rows_removed=30)
    assert "a purge up to row 30 is not signed" in (_broken(chain) or "")


def test_rows_removed_from_the_middle_behind_a_forged_checkpoint_are_detected(
    chain: Engine,
) -> None:
    hash_of_39 = _row(chain, 39)["row_hash"]
    _execute(chain, "DELETE FROM audit_decisions WHERE seq BETWEEN 20 AND 39")
    assert "rows 20 to 39 are missing" in (_broken(chain) or "")
    _forge_checkpoint(chain, last_seq=39, last_hash=hash_of_39, rows_removed=20)
    assert "a purge up to row 39 is not signed" in (_broken(chain) or "")


def test_every_row_removed_behind_a_checkpoint_at_the_head_is_detected(chain: Engine) -> None:
    head = _head(chain)
    _execute(chain, "DELETE FROM audit_decisions")
    assert "rows at the end were removed" in (_broken(chain) or "")
    # A signature copied from the head does not sign a checkpoint.
    _forge_checkpoint(
        chain,
        last_seq=head.seq,
        last_hash=head.hash,
        rows_removed=head.seq,
        signature=head.signature,
    )
    assert "has a signature that does not verify" in (_broken(chain) or "")


def test_the_purge_permission_does_not_let_todays_rows_go_unseen(engine: Engine) -> None:
    """PostgreSQL, triggers on: any role that may purge can SET LOCAL accord.purge and
    delete; without the key, its checkpoint cannot be signed."""
    if engine.dialect.name != "postgresql":
        pytest.skip("accord.purge is PostgreSQL's trigger permission")
    write_rows(engine, [datetime.now(UTC) - timedelta(minutes=ROWS - n) for n in range(ROWS)])
    with pytest.raises(DBAPIError, match="append-only"):
        _execute(engine, "DELETE FROM audit_decisions WHERE seq <= 50")
    last = _row(engine, 50)
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL accord.purge = 'on'"))
        connection.execute(text("DELETE FROM audit_decisions WHERE seq <= 50"))
        connection.execute(
            insert(AuditCheckpoint).values(
                purged_before=datetime.now(UTC),
                last_seq=50,
                last_hash=last["row_hash"],
                rows_removed=50,
                created_at=datetime.now(UTC),
                created_by="cli",
            )
        )
    assert "a purge up to row 50 is not signed" in (_broken(engine) or "")


def test_a_chain_rewritten_hashes_and_all_fails_on_the_head_signature(chain: Engine) -> None:
    """The attacker has the code: they change a row, re-chain every row after it and move
    the head, but cannot sign the new head."""
    decision = _row(chain, 25)["decision"]
    _rewrite(chain, 25, "decision", "permit" if decision == "deny" else "deny")
    assert "the chain head has a signature that does not verify" in (_broken(chain) or "")


def test_a_removed_or_changed_real_checkpoint_is_detected(chain: Engine) -> None:
    """Two real purges, then the first checkpoint deleted (its rows stay gone), or the second
    one's count changed: the checkpoints no longer account for every removed row."""
    for last in (20, 40):
        cutoff = _row(chain, last + 1)["decided_at"]
        assert purge_before(chain, before=cutoff, actor="dpo", signer=AUDIT_SIGNER) is not None
    assert _broken(chain) is None
    with chain.connect() as connection:
        checkpoints = connection.execute(
            select(AuditCheckpoint.id, AuditCheckpoint.rows_removed).order_by(AuditCheckpoint.id)
        ).all()
    assert [removed for _, removed in checkpoints] == [20, 20]
    _execute(
        chain, "UPDATE audit_checkpoints SET rows_removed = 40 WHERE id = :id", id=checkpoints[1][0]
    )
    assert "a purge up to row 40 has a signature that does not verify" in (_broken(chain) or "")
    _execute(
        chain, "UPDATE audit_checkpoints SET rows_removed = 20 WHERE id = :id", id=checkpoints[1][0]
    )
    assert _broken(chain) is None
    _execute(chain, "DELETE FROM audit_checkpoints WHERE id = :id", id=checkpoints[0][0])
    assert "records 20 rows removed, but follows row 0" in (_broken(chain) or "")


def test_rows_cut_from_the_end_with_an_old_signed_head_replayed_need_a_saved_head(
    chain: Engine,
) -> None:
    """The one attack the database alone cannot show: the newest rows removed and an older
    head, with the signature it had then, put back. A head a witness saved catches it."""
    old_head = _head(chain)  # e.g. read from a backup
    write_rows(chain, [datetime.now(UTC)] * 5)
    saved = _head(chain)  # what the witness kept (GET /v1/audit/head)
    assert _broken(chain, [saved]) is None
    _execute(chain, "DELETE FROM audit_decisions WHERE seq > :seq", seq=old_head.seq)
    with chain.begin() as connection:
        connection.execute(
            update(AuditChainHead).values(
                last_seq=old_head.seq, last_hash=old_head.hash, signature=old_head.signature
            )
        )
    assert _broken(chain) is None  # every stored row and signature is consistent
    problem = _broken(chain, [saved]) or ""
    assert f"before a saved head at row {saved.seq}" in problem


def test_a_saved_head_proves_the_rows_before_it_and_a_forged_one_is_refused(
    chain: Engine,
) -> None:
    saved = _head(chain)
    forged = ChainHead(saved.seq, "f" * 64, saved.signature)
    assert "the saved head at row 60 has a signature that does not verify" in (
        _broken(chain, [forged]) or ""
    )
    # A row before the saved head replaced by a re-chained copy, head re-pointed and its
    # signature kept: the head's signature catches it, and so does the saved head.
    _rewrite(chain, 10, "case_ref", "CP-FORGED")
    with chain.connect() as connection:
        result = verify_chain(connection, _keys(), [saved])
    assert result.broken is not None
    assert result.broken.seq == 60


def test_a_purge_checkpoint_is_signed_with_its_count_and_last_hash(chain: Engine) -> None:
    cutoff = _row(chain, 31)["decided_at"]
    last_hash = _row(chain, 30)["row_hash"]
    purge = purge_before(chain, before=cutoff, actor="dpo", signer=AUDIT_SIGNER)
    assert purge is not None and (purge.last_seq, purge.rows_removed) == (30, 30)
    with chain.connect() as connection:
        checkpoint = connection.execute(select(AuditCheckpoint.__table__)).one()
    assert (checkpoint.last_seq, checkpoint.last_hash, checkpoint.rows_removed) == (
        30,
        last_hash,
        30,
    )
    assert checkpoint.signature is not None
    assert checkpoint.signature.startswith(f"ed25519:{AUDIT_SIGNER.key_id}:")
    assert _broken(chain) is None


def test_the_signed_head_is_served_and_checks_with_the_public_key_alone(
    database_url: str, server_factory: Callable[[dict[str, str]], Server]
) -> None:
    env = scenario_env(database_url)
    import_agreements_from(env)
    server = server_factory(env)
    assert server.post("/v1/decisions", json=MASH_REQUEST).status_code == 200
    head = server.get("/v1/audit/head").json()
    assert head["seq"] == 1 and head["decision_id"]
    # What the witness does: check it with the published public key and the documented
    # statement, no Accord code involved.
    public = load_pem_public_key(public_path(AUDIT_KEY_FILE).read_bytes())
    assert isinstance(public, Ed25519PublicKey)
    algorithm, key_id, signature = head["signature"].split(":")
    assert (algorithm, key_id) == ("ed25519", AUDIT_SIGNER.key_id)
    public.verify(base64.b64decode(signature), f"accord audit head v1 1 {head['hash']}".encode())
    assert server.get("/v1/audit/verify").json()["signed_by"] == [AUDIT_SIGNER.key_id]


@pytest.mark.slow
def test_the_cli_verifies_with_a_public_key_and_saved_heads(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    env = {"ACCORD_DATABASE_URL": database_url}
    write_rows(engine, [datetime.now(UTC)] * 10)
    heads = tmp_path / "heads.ndjson"
    heads.write_text(accord("audit", "head", "--signed", env=env).stdout)
    saved = json.loads(heads.read_text())
    assert saved["seq"] == 10 and saved["signature"].startswith("ed25519:")
    assert "signature" not in json.loads(accord("audit", "head", env=env).stdout)
    public = str(public_path(AUDIT_KEY_FILE))
    auditor = {**env, "ACCORD_AUDIT_SIGNING_KEY_FILE": ""}  # the auditor has no private key
    result = accord("audit", "verify", "--public-key", public, "--head", str(heads), env=auditor)
    assert "intact: 10 rows verified" in result.stdout
    assert f"signed by key {AUDIT_SIGNER.key_id}" in result.stdout
    assert "1 saved heads on the chain" in result.stdout

    if engine.dialect.name == "postgresql":
        _execute(engine, "ALTER TABLE audit_decisions DISABLE TRIGGER audit_decisions_append_only")
        _execute(
            engine, "ALTER TABLE audit_chain_head DISABLE TRIGGER audit_chain_head_forward_only"
        )
    _execute(engine, "DELETE FROM audit_decisions WHERE seq > 7")
    _execute(
        engine,
        "UPDATE audit_chain_head SET last_seq = 7, last_hash = :hash, signature = NULL",
        hash=_row(engine, 7)["row_hash"],
    )
    result = accord("audit", "verify", "--public-key", public, env=auditor, check=False)
    assert result.returncode == 1
    assert "BROKEN at row 7" in result.stderr and "the chain head is not signed" in result.stderr


def test_a_replica_without_the_signing_key_refuses_to_start(database_url: str) -> None:
    async def start(settings: Settings) -> None:
        async with LifespanManager(create_app(settings)):
            pass

    with pytest.raises(SigningKeyError, match="ACCORD_AUDIT_SIGNING_KEY_FILE"):
        asyncio.run(start(Settings(database_url=database_url, audit_signing_key_file=None)))
    unsigned = Settings(database_url=database_url, audit_signing_key_file=None, audit_unsigned=True)
    asyncio.run(start(unsigned))  # development only: starts


@pytest.mark.slow
def test_accord_serve_without_a_key_exits_naming_the_setting(database_url: str) -> None:
    unset = {"ACCORD_DATABASE_URL": database_url, "ACCORD_AUDIT_SIGNING_KEY_FILE": ""}
    result = accord("serve", "--port", str(free_port()), env=unset, check=False)
    assert result.returncode == 2
    assert "no audit signing key: set ACCORD_AUDIT_SIGNING_KEY_FILE" in result.stderr


@pytest.mark.slow
def test_keys_create_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    key = tmp_path / "audit.key"
    result = accord("keys", "audit-signing", "create", "--out", str(key), env={})
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in key.read_text() and "PUBLIC KEY" in public_path(key).read_text()
    signer_id = KeyRing([load_public_key(public_path(key))]).key_ids[0]
    assert signer_id in result.stdout
    again = accord("keys", "audit-signing", "create", "--out", str(key), env={}, check=False)
    assert again.returncode == 2 and "cannot create" in again.stderr
