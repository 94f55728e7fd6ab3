"""API keys follow their own revision: creating or revoking a client compiles no policy,
and a revoked key is refused by every replica within a second, on both backends."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

import pytest
from sqlalchemy import Engine

from app.store.revisions import read_revisions
from tests.conftest import REPO, ProcessServer, Server, accord, create_key, wait_until

AGREEMENTS = REPO / "policies" / "agreements"
AGENCY = "police.riverton"


pytestmark = pytest.mark.slow  # two `accord serve` processes


def _compiles(server: Server) -> float:
    metrics = server.get("/metrics")
    assert metrics.status_code == 200, metrics.text
    found = re.search(r"^accord_policy_compiles_total (\S+)$", metrics.text, re.MULTILINE)
    assert found, "no accord_policy_compiles_total in /metrics"
    return float(found.group(1))


def _revisions(server: Server) -> tuple[int, int]:
    ready = server.get("/readyz", key=None).json()
    return ready["policy_revision"], ready["client_revision"]


def _authenticates(server: Server, key: str) -> int:
    return server.get("/v1/vocabulary", key=key).status_code


def _refused_within(replicas: Sequence[Server], key: str, since: float) -> float:
    """Ask every replica with `key` until all answer 401; the seconds that took from `since`."""
    waiting = list(replicas)
    while waiting:
        waiting = [replica for replica in waiting if _authenticates(replica, key) != 401]
        assert time.monotonic() - since < 5, "a replica still accepts the revoked key after 5 s"
    return time.monotonic() - since


def test_client_changes_compile_nothing_and_a_revoked_key_is_refused_on_another_replica(
    database_url: str,
    engine: Engine,
    process_server_factory: Callable[[dict[str, str]], ProcessServer],
) -> None:
    env = {"ACCORD_DATABASE_URL": database_url}
    accord("agreements", "import", str(AGREEMENTS), env=env)
    # Two processes: each replica has its own compile counter and its own poll.
    replica_1, replica_2 = process_server_factory(env), process_server_factory(env)
    replicas = [replica_1, replica_2]
    with engine.connect() as connection:
        stored = read_revisions(connection)
    assert wait_until(
        lambda: all(_revisions(r) == (stored.policy, stored.clients) for r in replicas), 5
    )
    compiles = [_compiles(replica) for replica in replicas]
    assert all(count >= 1 for count in compiles)

    # Through the API of replica 1: the key reaches replica 2 by its poll.
    created = replica_1.post(
        "/v1/clients",
        json={"id": "partner-api", "name": "Partner", "scopes": ["decide"], "agencies": [AGENCY]},
    )
    assert created.status_code == 201, created.text
    api_key = created.json()["key"]
    assert _authenticates(replica_1, api_key) == 200, "the replica that created it accepts it"
    assert wait_until(lambda: _authenticates(replica_2, api_key) == 200, 1.0)
    revoked = replica_1.post("/v1/clients/partner-api/revoke")
    assert revoked.status_code == 200, revoked.text
    lag = _refused_within(replicas, api_key, time.monotonic())
    assert lag < 1.0, f"the revoked key was accepted for {lag:.2f} s"

    # With the command, which neither replica sees but by polling.
    cli_key = create_key(env, "partner-cli", scopes="decide", agencies=AGENCY)
    assert wait_until(lambda: all(_authenticates(r, cli_key) == 200 for r in replicas), 1.0)
    accord("clients", "revoke", "partner-cli", env=env)
    lag = _refused_within(replicas, cli_key, time.monotonic())
    assert lag < 1.0, f"the key revoked with the command was accepted for {lag:.2f} s"

    # Four client changes: the policy revision did not move and nothing compiled.
    with engine.connect() as connection:
        after = read_revisions(connection)
    assert after.policy == stored.policy
    assert after.clients == stored.clients + 4
    assert all(_revisions(replica) == (stored.policy, after.clients) for replica in replicas)
    assert [_compiles(replica) for replica in replicas] == compiles
    decision = replica_2.post(
        "/v1/decisions",
        json={
            "requester": AGENCY,
            "holder": "la.riverton.childrens-services",
            "subject": {"id": "P-1", "attributes": {"age": 12}},
            "field": "identity.name",
            "purpose": "safeguarding",
        },
    )
    assert decision.status_code == 200, decision.text
    assert decision.json()["policy_revision"] == stored.policy

    # The change log records them as before.
    for client_id in ("partner-api", "partner-cli"):
        changes = replica_2.get("/v1/changes", params={"target_id": client_id}).json()["items"]
        assert [(c["action"], c["target_type"]) for c in changes] == [
            ("client.revoke", "client"),
            ("client.create", "client"),
        ]
        assert changes[0]["before"]["revoked"] is False and changes[0]["after"]["revoked"] is True

    # A register change compiles nothing either: the register is data (its own feed).
    restriction = replica_1.post(
        "/v1/register/restrictions",
        json={
            "id": "r-control",
            "person": "P-control",
            "kind": "sealed",
            "fields": ["contact.address"],
            "reason": "control",
        },
    )
    assert restriction.status_code == 201, restriction.text
    assert [_compiles(replica) for replica in replicas] == compiles

    # The control: an agreement change moves the policy revision and every replica
    # compiles once.
    suspended = replica_1.post(
        "/v1/agreements/isa-riverton-discharge/suspend", json={"reason": "control"}
    )
    assert suspended.status_code == 201, suspended.text
    assert wait_until(lambda: all(_revisions(r)[0] == stored.policy + 1 for r in replicas), 2.0), (
        "a replica did not follow the policy revision"
    )
    assert [_compiles(replica) for replica in replicas] == [count + 1 for count in compiles]
