"""Two replicas behind nginx on one PostgreSQL, as deploy/compose.yaml runs them.

nginx runs deploy/nginx.conf itself, with only its addresses changed to loopback
ports. It gives each request an id (X-Request-ID) that the replica keeps, logs
and writes into the audit row, so each replica's own log says which requests it
answered, and nginx's log says the same from the other side.

- decisions through the proxy are answered by both replicas, into one audit
  trail that verifies, each answered decision_id in it exactly once;
- a change made through the proxy is enforced by both replicas within a second;
- SIGTERM to one replica under load loses no request and no row: nginx sends
  what that replica refuses to the other, the replica finishes what it had,
  flushes its audit writer and exits 0;
- kill -9 to one replica under load: nginx asks the other replica again
  (POST included), and no decision, answered or cut off, lacks its row;
- and, against one replica directly: after SIGTERM it accepts no connection but
  answers the decisions it was in the middle of.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from app.store.database import make_engine
from app.store.tables import AuditDecision
from tests.conftest import (
    REPO,
    SCENARIO,
    ProcessServer,
    accord,
    create_key,
    free_port,
    scenario_env,
    start_server,
)
from tests.postgres import ThrowawayPostgres

pytestmark = pytest.mark.slow  # replicas behind nginx, SIGTERM and kill -9

NGINX_CONF = REPO / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

MASH = {  # permitted by isa-blackpool-mash, which no test here changes
    "requester": "la.blackpool.childrens-services",
    "holder": "police.lancashire",
    "field": "criminal.convictions",
    "purpose": "safeguarding.children",
}
ADULT = {  # permitted by isa-adult-safeguarding until the suspension test
    "requester": "la.blackpool.adult-services",
    "holder": "nhs.blackpool-hospitals",
    "subject": {"id": "P-202", "attributes": {"age": 80}},
    "field": "health.mental",
    "purpose": "safeguarding.adults",
}


def mash(person: str, age: int | None = 12) -> dict[str, Any]:
    attributes = {} if age is None else {"age": age}
    return {**MASH, "subject": {"id": person, "attributes": attributes}}


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def answered_request_ids(server: ProcessServer) -> set[str]:
    """Requests the replica's own log says it answered with a decision."""
    return {
        line["request_id"]
        for line in json_lines(server.log_path)
        if line.get("event") == "request"
        and line.get("path") == "/v1/decisions"
        and line.get("status") == 200
    }


# --- nginx -----------------------------------------------------------------------------


def proxy_config(upstream_ports: list[int], port: int, folder: Path) -> str:
    """deploy/nginx.conf with the replicas and the listener on loopback ports."""
    text = NGINX_CONF.read_text(encoding="utf-8")
    servers = re.findall(r"^\s*server\s+([^\s;{]+)", text, re.MULTILINE)
    assert len(servers) == len(upstream_ports), f"deploy/nginx.conf upstreams: {servers}"
    for address, upstream_port in zip(servers, upstream_ports, strict=True):
        text = text.replace(f"server {address} ", f"server 127.0.0.1:{upstream_port} ", 1)
    text, listeners = re.subn(r"\blisten\s+[^;]+;", f"listen 127.0.0.1:{port};", text)
    assert listeners == 1
    # nginx's temporary files (large bodies) in the test's folder, not /var/lib/nginx.
    temp = "".join(
        f"\n    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text, https = re.subn(r"^http\s*\{", "http {" + temp, text, flags=re.MULTILINE)
    assert https == 1
    return text


@dataclass
class Proxy:
    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.folder / "access.log"  # nginx's stdout: access_log /dev/stdout

    def start(self, upstream_ports: list[int]) -> None:
        if not Path(NGINX).exists():
            pytest.fail("nginx is not installed: apt-get install nginx")
        config = self.folder / "nginx.conf"
        config.write_text(proxy_config(upstream_ports, self.port, self.folder), encoding="utf-8")
        directives = f"daemon off; pid {self.folder / 'nginx.pid'};"
        if os.geteuid() == 0:
            directives += " user root;"  # workers write into this root-only folder
        with self.access_log.open("ab") as out, (self.folder / "error.log").open("ab") as err:
            self.process = subprocess.Popen(
                [
                    NGINX,
                    "-p",
                    str(self.folder),
                    "-c",
                    str(config),
                    "-e",
                    "stderr",
                    "-g",
                    directives,
                ],
                stdout=out,
                stderr=err,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited:\n{(self.folder / 'error.log').read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"nginx not answering:\n{(self.folder / 'error.log').read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            self.process.wait(timeout=15)

    def upstreams_by_request_id(self) -> dict[str, str]:
        return {line["request_id"]: line["upstream_addr"] for line in json_lines(self.access_log)}


# --- the cluster -----------------------------------------------------------------------


@dataclass
class Cluster:
    env: dict[str, str]
    engine: Engine
    replicas: list[ProcessServer]
    proxy: Proxy
    officer: str
    folder: Path

    @property
    def key(self) -> str:
        return self.replicas[0].key  # every replica's key works on all: one database

    def client(self, base_url: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=base_url or self.proxy.url,
            timeout=15,
            headers={"authorization": f"Bearer {self.key}"},
        )

    def audit_counts(self, decision_ids: list[str]) -> Counter[str]:
        """How many audit rows each decision id has."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(AuditDecision.decision_id, func.count())
                .where(AuditDecision.decision_id.in_(decision_ids))
                .group_by(AuditDecision.decision_id)
            ).all()
        return Counter({decision_id: count for decision_id, count in rows})

    def audit_rows_for_persons(self, prefix: str) -> dict[str, str]:
        """decision_id -> request_id of every audit row about persons named `prefix`..."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(AuditDecision.decision_id, AuditDecision.request_id).where(
                    AuditDecision.person_id.startswith(prefix)
                )
            ).all()
        return {decision_id: request_id for decision_id, request_id in rows}

    def assert_chain_verifies(self) -> None:
        verified = accord("audit", "verify", env=self.env)
        assert verified.stdout.startswith("intact"), verified.stdout + verified.stderr


@pytest.fixture(scope="module")
def cluster(
    postgres: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("replica-proxy")
    env = scenario_env(postgres.new_database())
    accord("db", "upgrade", env=env)  # once, as the compose file's migrate service does
    accord("agreements", "import", str(SCENARIO / "agreements"), env=env)
    officer = create_key(
        env, "ig-officer", scopes="manage,audit", agencies="la.blackpool.adult-services"
    )
    replicas: list[ProcessServer] = []
    proxy = Proxy(free_port(), folder)
    engine = make_engine(env["ACCORD_DATABASE_URL"])
    try:
        replicas += [start_server(env, folder), start_server(env, folder)]
        proxy.start([replica.port for replica in replicas])
        yield Cluster(env, engine, replicas, proxy, officer, folder)
    finally:
        proxy.stop()
        for replica in replicas:
            replica.stop()
        engine.dispose()


# --- load ------------------------------------------------------------------------------


@dataclass
class Answer:
    at: float
    request_id: str  # sent as X-Request-ID, kept by nginx and the replica
    echoed_id: str
    status: int
    decision_id: str


def ask(client: httpx.Client, request_id: str) -> Answer:
    """One decision about person `request_id`, under that request id."""
    response = client.post(
        "/v1/decisions", json=mash(request_id), headers={"x-request-id": request_id}
    )
    decision_id = response.json().get("decision_id", "") if response.is_success else ""
    echoed = response.headers.get("x-request-id", "")
    return Answer(time.monotonic(), request_id, echoed, response.status_code, decision_id)


@dataclass
class Load:
    """Threads asking for decisions through the proxy without pause, keeping every answer."""

    cluster: Cluster
    tag: str
    threads: int = 4
    answers: list[Answer] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # request id -> what went wrong

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._ask, args=(n,)) for n in range(self.threads)]

    def _ask(self, worker: int) -> None:
        count = 0
        with self.cluster.client() as client:
            while not self._stop.is_set():
                count += 1
                request_id = f"{self.tag}-{worker}-{count}"
                try:
                    answer = ask(client, request_id)
                except httpx.TransportError as exc:
                    with self._lock:
                        self.errors[request_id] = repr(exc)
                    continue
                with self._lock:
                    self.answers.append(answer)

    def wait_until_every_replica_answers(self) -> None:
        """Both replicas in nginx's rotation (one may have been back only for seconds)."""
        deadline = time.monotonic() + 15
        for replica in self.cluster.replicas:
            while not any(rid.startswith(f"{self.tag}-") for rid in answered_request_ids(replica)):
                assert time.monotonic() < deadline, f"replica {replica.port} gets no requests"
                time.sleep(0.05)

    def received(self) -> dict[str, str]:
        """decision_id -> request id of every decision answered."""
        assert all(answer.echoed_id == answer.request_id for answer in self.answers)
        return {answer.decision_id: answer.request_id for answer in self.answers}

    def __enter__(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)


def who_answered(replicas: list[ProcessServer], request_ids: set[str]) -> dict[str, int]:
    """request id -> port of the one replica whose log says it answered it.

    A replica logs a request just after answering it: the last few lines may lag.
    """
    deadline = time.monotonic() + 5
    while True:
        logged = {replica.port: answered_request_ids(replica) for replica in replicas}
        found = {
            request_id: [port for port, ids in logged.items() if request_id in ids]
            for request_id in request_ids
        }
        if all(found.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for request_id, ports in found.items():
        assert len(ports) == 1, f"request {request_id} answered by {ports}"
    return {request_id: ports[0] for request_id, ports in found.items()}


# --- the tests -------------------------------------------------------------------------


def test_both_replicas_answer_through_the_proxy_into_one_audit_trail(cluster: Cluster) -> None:
    with cluster.client() as client:  # one connection to nginx, answered in turn
        answers = [ask(client, f"PA-seq-{n}") for n in range(30)]
    assert {answer.status for answer in answers} == {200}
    received = {answer.decision_id: answer.request_id for answer in answers}
    with Load(cluster, "PA-load") as load:
        time.sleep(1.0)
    assert not load.errors
    assert {answer.status for answer in load.answers} == {200}
    received |= load.received()
    assert len(received) > 60

    # Which replica answered each request, from each replica's own log.
    answered_by = who_answered(cluster.replicas, set(received.values()))
    per_replica = Counter(answered_by.values())
    assert set(per_replica) == {replica.port for replica in cluster.replicas}
    assert min(per_replica.values()) >= len(received) // 4, f"lopsided: {per_replica}"
    # nginx's log names the same replica for each request.
    upstream = cluster.proxy.upstreams_by_request_id()
    for request_id, port in answered_by.items():
        assert upstream[request_id] == f"127.0.0.1:{port}"

    # One audit trail: each decision answered is in it once, with the request's id.
    assert cluster.audit_counts(list(received)) == Counter(dict.fromkeys(received, 1))
    assert cluster.audit_rows_for_persons("PA-") == received
    cluster.assert_chain_verifies()


def test_a_suspension_through_the_proxy_reaches_both_replicas_within_a_second(
    cluster: Cluster,
) -> None:
    seen: dict[int, list[tuple[float, str]]] = {replica.port: [] for replica in cluster.replicas}
    stop = threading.Event()

    def watch(replica: ProcessServer) -> None:
        with cluster.client(replica.url) as client:  # straight to the replica
            while not stop.is_set():
                response = client.post("/v1/decisions", json=ADULT)
                decision = response.json()["decision"] if response.status_code == 200 else ""
                seen[replica.port].append((time.monotonic(), decision))

    watchers = [threading.Thread(target=watch, args=(replica,)) for replica in cluster.replicas]
    for watcher in watchers:
        watcher.start()
    try:
        time.sleep(0.5)
        with cluster.client() as client:
            response = client.post(
                "/v1/agreements/isa-adult-safeguarding/suspend",
                json={"reason": "audit found over-sharing"},
                headers={"authorization": f"Bearer {cluster.officer}"},
            )
        suspended_at = time.monotonic()
        assert response.status_code == 201, response.text
        time.sleep(1.5)
    finally:
        stop.set()
        for watcher in watchers:
            watcher.join(timeout=15)

    for port, answers in seen.items():
        decisions = [decision for _, decision in answers]
        assert set(decisions) == {"permit", "deny"}, f"replica {port}: {Counter(decisions)}"
        assert decisions[0] == "permit", f"replica {port} did not permit before"
        first_deny = next(at for at, decision in answers if decision == "deny")
        assert first_deny - suspended_at < 1.0, f"replica {port} permitted for too long"
        assert "permit" not in decisions[decisions.index("deny") :]
    with cluster.client() as client:
        after = [client.post("/v1/decisions", json=ADULT).json()["decision"] for _ in range(6)]
    assert after == ["deny"] * 6


def test_sigterm_to_one_replica_under_load_loses_no_request_and_no_row(
    cluster: Cluster,
) -> None:
    victim, survivor = cluster.replicas
    assert victim.process is not None
    with Load(cluster, "PB") as load:
        load.wait_until_every_replica_answers()
        time.sleep(0.5)
        terminated_at = time.monotonic()
        victim.process.send_signal(signal.SIGTERM)
        exit_code = victim.process.wait(timeout=30)
        time.sleep(1.0)  # the survivor alone

    assert exit_code == 0, victim.logs()[-2000:]
    assert "Application shutdown complete" in victim.logs()  # the audit writer flushed
    assert not load.errors, list(load.errors.items())[:5]
    statuses = Counter(answer.status for answer in load.answers)
    assert statuses.keys() == {200}, f"requests lost through the proxy: {statuses}"
    assert len(load.answers) > 50
    assert any(answer.at > terminated_at + 0.5 for answer in load.answers)

    received = load.received()
    answered_by = Counter(who_answered(cluster.replicas, set(received.values())).values())
    assert answered_by.keys() == {victim.port, survivor.port}
    # Every answer has its row, once; and under a graceful stop no row lacks its answer.
    assert cluster.audit_counts(list(received)) == Counter(dict.fromkeys(received, 1))
    assert cluster.audit_rows_for_persons("PB-") == received
    cluster.assert_chain_verifies()

    victim.start()  # back in the pool for whatever runs next


def test_a_replica_killed_under_load_loses_no_row_and_hides_none(cluster: Cluster) -> None:
    """kill -9: what the dead replica was answering is asked again of the other.

    nginx retries a POST whose connection died before any of its answer came
    (non_idempotent): the caller gets the other replica's decision. If the dead
    replica had committed its row for that request, the trail holds two rows with
    the same request id, the answered one and the orphan. A response cut off after
    its head cannot be retried: that caller gets an error, and the trail has the
    row. The trail may over-report a disclosure, never hide one.
    """
    victim = cluster.replicas[1]
    assert victim.process is not None
    with Load(cluster, "PK") as load:
        load.wait_until_every_replica_answers()
        time.sleep(0.5)
        victim.process.kill()
        victim.process.wait(timeout=10)
        time.sleep(1.0)

    statuses = Counter(answer.status for answer in load.answers)
    assert statuses.keys() == {200}, f"nginx did not retry on the other replica: {statuses}"
    assert len(load.errors) <= load.threads, "more cut off than were in flight"
    assert all("RemoteProtocolError" in error for error in load.errors.values()), load.errors
    # Both replicas were answering before the kill (wait_until_every_replica_answers);
    # the dead one's log may lack its last answers: it logs just after answering.
    received = load.received()
    assert cluster.audit_counts(list(received)) == Counter(dict.fromkeys(received, 1))
    recorded = Counter(cluster.audit_rows_for_persons("PK-").values())  # request id -> rows
    for request_id in load.errors:
        assert recorded[request_id] == 1, "a decision whose answer was cut off has no row"
    orphans = recorded - Counter(received.values()) - Counter(load.errors.keys())
    assert set(orphans) <= set(received.values()), "a row for a request never asked"
    assert all(count == 1 for count in orphans.values())
    cluster.assert_chain_verifies()

    victim.start()


class SlowPersonService:
    """A person-information service that holds every lookup until released."""

    def __init__(self) -> None:
        self.arrived = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with service._lock:
                    service.arrived += 1
                service.release.wait(timeout=20)
                body = json.dumps({"age": 12}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/persons/{{person_id}}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_lets_in_flight_decisions_finish_and_exits_0(cluster: Cluster) -> None:
    people = SlowPersonService()
    env = {
        **cluster.env,
        "ACCORD_PERSON_INFO_URL": people.url,
        "ACCORD_PERSON_INFO_TIMEOUT_SECONDS": "20",
    }
    replica = start_server(env, cluster.folder)
    in_flight = 6
    results: list[httpx.Response] = []

    def decide(n: int) -> None:  # no age given: the replica asks the person service
        with cluster.client(replica.url) as client:
            results.append(client.post("/v1/decisions", json=mash(f"PC-{n}", age=None)))

    askers = [threading.Thread(target=decide, args=(n,)) for n in range(in_flight)]
    try:
        for asker in askers:
            asker.start()
        deadline = time.monotonic() + 15
        while people.arrived < in_flight:
            assert time.monotonic() < deadline, f"{people.arrived} lookups arrived"
            time.sleep(0.05)
        assert replica.process is not None
        replica.process.send_signal(signal.SIGTERM)

        deadline = time.monotonic() + 5
        while not refuses_connections(replica.port):
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.05)
        assert replica.process.poll() is None, "exited with decisions in flight"
        assert results == []

        people.release.set()
        for asker in askers:
            asker.join(timeout=20)
        exit_code = replica.process.wait(timeout=30)
    finally:
        people.close()
        replica.stop()

    assert exit_code == 0, replica.logs()[-2000:]
    assert len(results) == in_flight
    assert [(r.status_code, r.json()["decision"]) for r in results] == [(200, "permit")] * in_flight
    received = {r.json()["decision_id"]: r.headers["x-request-id"] for r in results}
    assert cluster.audit_rows_for_persons("PC-") == received
    # Answered, then the lifespan shutdown (the audit writer's flush), in that order.
    events = [line.get("event") for line in json_lines(replica.log_path)]
    last_answer = max(i for i, event in enumerate(events) if event == "request")
    assert last_answer < events.index("Application shutdown complete.")
    cluster.assert_chain_verifies()
