"""Fixtures: both database backends, the service (in this process over httpx's ASGI
transport, or a real `accord serve` on loopback), the shared scenario.

Most tests talk to an `InProcessServer`: the app of `create_app`, its lifespan run (audit
writer thread, policy follower) on an event loop of its own, on a real database. Tests that
need a real process or socket (crash, SIGTERM, replicas, outages, logs, the browser, the
client library) use `ProcessServer`. Both offer the same `Server` interface.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import yaml
from asgi_lifespan import LifespanManager
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Receive, Scope, Send

from app.agreements.service import import_agreements
from app.audit.signing import create_key_files
from app.cli.common import listed
from app.clients.service import create_client
from app.config import Settings
from app.main import create_app
from app.policy.files import agreement_documents, load_vocabulary
from app.runtime.clock import Clock
from app.runtime.logs import LOG_OUTPUT
from app.store.database import make_engine, upgrade_schema
from tests.postgres import ThrowawayPostgres

REPO = Path(__file__).resolve().parents[1]
# The audit signing key every server and command of the session uses, as a deployment
# mounts one (a replica without a key refuses to start): ACCORD_AUDIT_SIGNING_KEY_FILE.
AUDIT_KEY_FILE = Path(tempfile.mkdtemp(prefix="accord-audit-key-")) / "audit-signing.key"
AUDIT_SIGNER = create_key_files(AUDIT_KEY_FILE)
os.environ["ACCORD_AUDIT_SIGNING_KEY_FILE"] = str(AUDIT_KEY_FILE)
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
    """Create an API client as `accord clients create` does (the same service call, in
    this process: a CLI run costs a second) and return its key."""
    settings = settings_of(env)
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            _, key = create_client(
                session,
                client_id=client_id,
                name=client_id,
                scopes=listed(scopes),
                agencies=listed(agencies),
                vocabulary=load_vocabulary(settings.vocabulary_file),
                actor="cli",
            )
            session.commit()
    finally:
        engine.dispose()
    return key


def import_agreements_from(env: dict[str, str], folder: Path = SCENARIO / "agreements") -> None:
    """Import a folder of agreements as `accord agreements import` does, in this process."""
    settings = settings_of(env)
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            import_agreements(
                session,
                agreement_documents(folder),
                vocabulary=load_vocabulary(settings.vocabulary_file),
                actor="cli",
            )
            session.commit()
    finally:
        engine.dispose()


ADMIN = object()  # the server's own all-scopes key


class Server:
    """The service as the tests see it, with an all-scopes key for the tests."""

    env: dict[str, str]
    key: str
    client_id: str

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    def _client_options(self) -> dict[str, Any]:
        raise NotImplementedError

    def request(
        self, method: str, path: str, *, key: object = ADMIN, **kwargs: Any
    ) -> httpx.Response:
        """Call the API with the admin key, another key, or none (key=None)."""
        headers = dict(kwargs.pop("headers", {}))
        chosen = self.key if key is ADMIN else key
        if chosen is not None:
            headers["authorization"] = f"Bearer {chosen}"
        kwargs.setdefault("timeout", 10)
        return self._send(method, f"{self.url}{path}", headers=headers, **kwargs)

    def client(self, *, key: object = ADMIN, **options: Any) -> httpx.Client:
        """A pooled client carrying the admin key (or another key, or none: key=None)."""
        chosen = self.key if key is ADMIN else key
        headers = {"authorization": f"Bearer {chosen}"} if chosen is not None else {}
        return httpx.Client(
            **{"base_url": self.url, "timeout": 10, "headers": headers, **options},
            **self._client_options(),
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def stop(self) -> None:
        raise NotImplementedError

    def logs(self) -> str:
        raise NotImplementedError


@dataclass
class ProcessServer(Server):
    """`accord serve` in its own process, on loopback."""

    env: dict[str, str]
    port: int
    log_path: Path
    key: str = ""
    client_id: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, url, **kwargs)

    def _client_options(self) -> dict[str, Any]:
        return {}

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


class _Replay(httpx.AsyncByteStream):
    """A request body read on the caller's thread, sent on the app's event loop."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


class _LoopTransport(httpx.BaseTransport):
    """A synchronous httpx transport that hands each request to the app's event loop
    (httpx's ASGI transport there) and waits for the whole answer."""

    def __init__(self, server: InProcessServer) -> None:
        self.server = server

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = _Replay([bytes(chunk) for chunk in request.stream])  # type: ignore[union-attr]
        forwarded = httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            stream=sent,
            extensions=request.extensions,
        )
        future = asyncio.run_coroutine_threadsafe(self._send(forwarded), self.server.loop)
        status, headers, body = future.result(timeout=120)
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))

    async def _send(self, request: httpx.Request) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        response = await self.server.transport.handle_async_request(request)
        body = b"".join([chunk async for chunk in response.aiter_raw()])
        await response.aclose()
        return response.status_code, response.headers.raw, body


def _own_state(app: ASGIApp) -> ASGIApp:
    """Each request its own shallow copy of the lifespan state, as uvicorn gives it
    (asgi-lifespan hands every request the one dict, where the app keeps its caller)."""

    async def with_own_state(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and "state" in scope:
            scope = {**scope, "state": dict(scope["state"])}
        await app(scope, receive, send)

    return with_own_state


def settings_of(env: dict[str, str]) -> Settings:
    """The Settings `accord serve` would read from these ACCORD_* variables."""
    values: dict[str, Any] = {
        name.removeprefix("ACCORD_").lower(): value
        for name, value in env.items()
        if name.startswith("ACCORD_")
    }
    return Settings(**values)


@dataclass
class InProcessServer(Server):
    """The app of `create_app` in this process: its lifespan runs on an event loop in a
    thread of its own; requests reach it through httpx's ASGI transport."""

    env: dict[str, str]
    key: str = ""
    client_id: str = ""
    clock: Clock | None = None
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _transport: httpx.ASGITransport | None = None
    _pool: httpx.Client | None = None
    _stopping: asyncio.Event | None = None
    _thread: threading.Thread | None = None
    _failure: BaseException | None = None
    _log: io.BytesIO = field(default_factory=io.BytesIO)

    @property
    def url(self) -> str:
        return "http://accord.test"

    @property
    def transport(self) -> httpx.ASGITransport:
        assert self._transport is not None, "the server is not started"
        return self._transport

    def _client_options(self) -> dict[str, Any]:
        return {"transport": _LoopTransport(self)}

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        assert self._pool is not None, "the server is not started"
        return self._pool.request(method, url, **kwargs)

    def start(self) -> None:
        app = create_app(settings_of(self.env), clock=self.clock)
        # The app's own log lines, as they go to stdout; every in-process app's alike.
        LOG_OUTPUT.copies.append(self._log)
        started = threading.Event()

        async def serve() -> None:
            self._stopping = asyncio.Event()
            async with LifespanManager(
                _own_state(app), startup_timeout=30, shutdown_timeout=30
            ) as manager:
                self._transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
                started.set()
                await self._stopping.wait()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(serve())
            except BaseException as exc:
                self._failure = exc
            finally:
                started.set()

        self._thread = threading.Thread(target=run, name="accord-in-process", daemon=True)
        self._thread.start()
        if not started.wait(60) or self._transport is None:
            raise AssertionError(f"the app did not start: {self._failure!r}")
        self._pool = httpx.Client(transport=_LoopTransport(self))
        deadline = time.monotonic() + 30
        while self.get("/readyz", key=None).status_code != 200:
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready: {self.get('/readyz', key=None).text}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._pool is not None:
            self._pool.close()
        if self._stopping is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=60)
        self._thread = None
        LOG_OUTPUT.copies.remove(self._log)
        if not self.loop.is_running():
            self.loop.close()
        if self._failure is not None:
            raise AssertionError(f"the app failed: {self._failure!r}")

    def logs(self) -> str:
        """The JSON log lines of the app's loggers while this server ran (those of other
        in-process apps running at the same time included; uvicorn's: none)."""
        return self._log.getvalue().decode()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that asks for the throwaway PostgreSQL server needs it: marked `postgres`."""
    for item in items:
        if "postgres" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


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


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
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


def _admin_identity(env: dict[str, str], port: int | str) -> tuple[str, str]:
    vocabulary = load_yaml(Path(env.get("ACCORD_VOCABULARY_FILE", SAMPLE_VOCABULARY)))
    return f"test-admin-{port}", vocabulary["agencies"][0]["id"]


def start_server(env: dict[str, str], tmp: Path) -> ProcessServer:
    """Start `accord serve` on a migrated database, with a fresh all-scopes key."""
    port = free_port()
    client_id, agency = _admin_identity(env, port)
    key = create_key(env, client_id, scopes="decide:any,audit,manage", agencies=agency)
    server = ProcessServer(
        env=env, port=port, log_path=tmp / f"server-{port}.log", key=key, client_id=client_id
    )
    server.start()
    return server


_in_process_servers = iter(range(1, 1_000_000))


def start_in_process(env: dict[str, str], *, clock: Clock | None = None) -> InProcessServer:
    """The app in this process on a migrated database, with a fresh all-scopes key."""
    client_id, agency = _admin_identity(env, f"inproc-{os.getpid()}-{next(_in_process_servers)}")
    key = create_key(env, client_id, scopes="decide:any,audit,manage", agencies=agency)
    server = InProcessServer(env=env, key=key, client_id=client_id, clock=clock)
    server.start()
    return server


class ServerFactory(Protocol):
    def __call__(self, env: dict[str, str], *, clock: Clock | None = None) -> Server: ...


@pytest.fixture
def server_factory() -> Iterator[ServerFactory]:
    """In-process servers, stopped when the test ends."""
    started: list[Server] = []

    def start(env: dict[str, str], *, clock: Clock | None = None) -> Server:
        server = start_in_process(env, clock=clock)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def process_server_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], ProcessServer]]:
    """Real `accord serve` processes, stopped when the test ends."""
    started: list[ProcessServer] = []

    def start(env: dict[str, str]) -> ProcessServer:
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


def _scenario_service(
    backend: Backend, start: Callable[[dict[str, str]], Server], *, cli: bool
) -> Iterator[ScenarioService]:
    url = backend.new_database()
    upgrade_schema(url)
    env = scenario_env(url)
    if cli:
        accord("agreements", "import", str(SCENARIO / "agreements"), env=env)
    else:
        import_agreements_from(env)
    server = start(env)
    engine = make_engine(url)
    try:
        load_register(server, load_yaml(SCENARIO / "cases.yaml")["register"])
        yield ScenarioService(server, url, engine)
    finally:
        server.stop()
        engine.dispose()


@pytest.fixture(scope="module")
def scenario_service(backend: Backend) -> Iterator[ScenarioService]:
    """The Blackpool scenario, loaded unchanged from ../shared, behind the app in-process."""
    yield from _scenario_service(backend, start_in_process, cli=False)


@pytest.fixture(scope="module")
def scenario_process_service(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScenarioService]:
    """The Blackpool scenario behind a real `accord serve` (for tests needing a socket)."""
    folder = tmp_path_factory.mktemp("scenario")
    yield from _scenario_service(backend, lambda env: start_server(env, folder), cli=True)


@pytest.fixture
def backend_engine_without_schema(backend: Backend) -> Iterator[Engine]:
    """An engine on a fresh database that no migration has touched."""
    engine = make_engine(backend.new_database())
    yield engine
    engine.dispose()
