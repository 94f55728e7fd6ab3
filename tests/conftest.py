"""Fixtures: both database backends, a real `accord serve` on loopback, the shared scenario."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import Engine

from app.store.database import make_engine, upgrade_schema
from tests.postgres import ThrowawayPostgres

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ACCORD_SHARED_DIR", REPO.parent / "shared"))
SCENARIO = SHARED / "scenarios" / "blackpool-mash"  # ../shared/scenarios, read unchanged
SAMPLE_VOCABULARY = REPO / "policies" / "vocabulary.yaml"
# A scenario question that the MASH agreement permits: a child, police records.
MASH_REQUEST = {
    "requester": "la.blackpool.childrens-services",
    "holder": "police.lancashire",
    "subject": {"id": "P-101", "attributes": {"age": 12}},
    "field": "criminal.convictions",
    "purpose": "safeguarding.children",
}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    """Poll `predicate` until it holds or `seconds` pass; whether it held."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def all_pages(api: httpx.Client, params: dict[str, Any], *, limit: int) -> list[dict[str, Any]]:
    """Every page of an audit search, `limit` rows a page, followed to the end."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page_params = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = api.get("/v1/audit/decisions", params=page_params)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def accord(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the `accord` command as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"accord {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def create_key(env: dict[str, str], client_id: str, *, scopes: str, agencies: str) -> str:
    """Create an API client with the CLI and return its key."""
    key_file = Path(tempfile.mkdtemp(prefix="accord-key-")) / "key"
    accord(
        "clients",
        "create",
        "--id",
        client_id,
        "--scopes",
        scopes,
        "--agencies",
        agencies,
        "--key-file",
        str(key_file),
        env=env,
    )
    return key_file.read_text().strip()


ADMIN = object()  # the server's own all-scopes key


@dataclass
class Server:
    """`accord serve` in its own process, on loopback, with an all-scopes key for the tests."""

    env: dict[str, str]
    port: int
    log_path: Path
    key: str = ""
    client_id: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, *, key: object = ADMIN, **kwargs: Any
    ) -> httpx.Response:
        """Call the API with the admin key, another key, or none (key=None)."""
        headers = dict(kwargs.pop("headers", {}))
        chosen = self.key if key is ADMIN else key
        if chosen is not None:
            headers["authorization"] = f"Bearer {chosen}"
        kwargs.setdefault("timeout", 10)
        return httpx.request(method, f"{self.url}{path}", headers=headers, **kwargs)

    def client(self) -> httpx.Client:
        """A pooled client carrying the admin key."""
        return httpx.Client(
            base_url=self.url, timeout=10, headers={"authorization": f"Bearer {self.key}"}
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def start(self) -> None:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
                env={**os.environ, **self.env},
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"accord serve exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"accord serve not ready:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8")


@dataclass
class Backend:
    name: str
    new_database: Callable[[], str]


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "postgresql":
        pg: ThrowawayPostgres = request.getfixturevalue("postgres")
        return Backend("postgresql", pg.new_database)
    folder = Path(tempfile.mkdtemp(prefix="accord-sqlite-"))
    counter = iter(range(1, 1_000_000))
    return Backend("sqlite", lambda: f"sqlite:///{folder / f'accord_{next(counter)}.db'}")


@pytest.fixture
def database_url(backend: Backend) -> str:
    """A fresh database at the latest schema."""
    url = backend.new_database()
    upgrade_schema(url)
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def scenario_env(database_url: str) -> dict[str, str]:
    return {
        "ACCORD_DATABASE_URL": database_url,
        "ACCORD_VOCABULARY_FILE": str(SCENARIO / "vocabulary.yaml"),
        "ACCORD_LOG_LEVEL": "info",
    }


def load_register(server: Server, register: dict[str, list[dict[str, Any]]]) -> None:
    """Record the scenario's register through the API, as a data controller would."""
    for kind in ("restrictions", "consents"):
        for entry in register.get(kind, []):
            body = {key: jsonable(value) for key, value in entry.items()}
            response = server.post(
                f"/v1/register/{kind}", json={**body, "reason": "scenario register"}
            )
            assert response.status_code == 201, response.text


def jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def start_server(env: dict[str, str], tmp: Path) -> Server:
    """Start `accord serve` on a migrated database, with a fresh all-scopes key."""
    port = free_port()
    vocabulary = load_yaml(Path(env.get("ACCORD_VOCABULARY_FILE", SAMPLE_VOCABULARY)))
    client_id = f"test-admin-{port}"
    key = create_key(
        env,
        client_id,
        scopes="decide:any,audit,manage",
        agencies=vocabulary["agencies"][0]["id"],
    )
    server = Server(
        env=env, port=port, log_path=tmp / f"server-{port}.log", key=key, client_id=client_id
    )
    server.start()
    return server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Server]]:
    started: list[Server] = []

    def start(env: dict[str, str]) -> Server:
        server = start_server(env, tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@dataclass
class ScenarioService:
    server: Server
    database_url: str
    engine: Engine


@pytest.fixture(scope="module")
def scenario_service(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScenarioService]:
    """The Blackpool scenario, loaded unchanged from ../shared, behind a real server."""
    url = backend.new_database()
    upgrade_schema(url)
    env = scenario_env(url)
    accord("agreements", "import", str(SCENARIO / "agreements"), env=env)
    server = start_server(env, tmp_path_factory.mktemp("scenario"))
    engine = make_engine(url)
    try:
        load_register(server, load_yaml(SCENARIO / "cases.yaml")["register"])
        yield ScenarioService(server, url, engine)
    finally:
        server.stop()
        engine.dispose()


@pytest.fixture
def backend_engine_without_schema(backend: Backend) -> Iterator[Engine]:
    """An engine on a fresh database that no migration has touched."""
    engine = make_engine(backend.new_database())
    yield engine
    engine.dispose()
