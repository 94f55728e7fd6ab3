"""deploy/ agrees with the app it runs: the compose file, the Kubernetes manifests,
nginx's configuration and the Dockerfile.

Every ACCORD_* variable they name is a field of app.config.Settings, every probe
and health check asks a route the app serves without a key, every command is a
real `accord` subcommand as app/cli/ parses it, the ports agree, nothing runs
as root, and the grace periods cover the app's own graceful shutdown.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
import yaml
from sqlalchemy.engine import make_url
from starlette.routing import Match

from app import cli
from app.config import Settings
from app.main import create_app
from app.web.auth import PUBLIC_PATHS

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
NGINX = DEPLOY / "nginx.conf"
K8S = DEPLOY / "k8s"
DOCKERFILE = REPO / "Dockerfile"

PREFIX = str(Settings.model_config.get("env_prefix", "")).upper()
SETTINGS = {f"{PREFIX}{name.upper()}": name for name in Settings.model_fields}
VARIABLE = re.compile(rf"\b{re.escape(PREFIX)}[A-Z0-9_]+\b")
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what a container's server must bind
UVICORN_KEEP_ALIVE_SECONDS = (
    inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
)


# --- the app, as the manifests see it ------------------------------------------------


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


@cache
def k8s() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def k8s_one(kind: str) -> dict[str, Any]:
    found = [doc for doc in k8s() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/k8s, found {len(found)}"
    return found[0]


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


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in k8s():
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["kind"], doc["spec"]["template"]["spec"]


# --- every file ----------------------------------------------------------------------


def deploy_files() -> list[Path]:
    return [path for path in sorted(DEPLOY.rglob("*")) if path.is_file()] + [DOCKERFILE]


def test_the_deploy_folder_has_what_ops_run() -> None:
    assert COMPOSE.is_file() and NGINX.is_file()
    kinds = {doc["kind"] for doc in k8s()}
    assert {
        "Deployment",
        "Service",
        "Job",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
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


def test_the_image_runs_accord_serve_as_a_non_root_user() -> None:
    stage = dockerfile()
    assert runs(stage["cmd"]) is cli.serve._serve
    user = stage["user"]
    assert user and user.split(":")[0] not in ("root", "0"), "the image runs as root"
    assert any(re.search(rf"useradd\b.*\b{re.escape(user)}\b", run) for run in stage["run"])


def test_the_image_health_check_asks_healthz_on_its_port() -> None:
    stage = dockerfile()
    path, port = url_in(stage["healthcheck"])
    assert path == "/healthz" and served(path) and path in PUBLIC_PATHS
    assert port == effective("port", stage["env"])
    assert stage["expose"] == [port]
    assert effective("host", stage["env"]) == ALL_INTERFACES, "serve must listen beyond loopback"


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


# --- Kubernetes ----------------------------------------------------------------------


def test_k8s_deployment_serves_on_accord_port_with_probes_on_real_routes() -> None:
    deployment = k8s_one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] >= 2
    (container,) = pod["containers"]
    assert runs(container["command"] + container.get("args", [])) is cli.serve._serve
    env = k8s_env(pod, container)
    port = effective("port", env, dockerfile()["env"])
    assert effective("host", env, dockerfile()["env"]) == ALL_INTERFACES
    ports = {item.get("name"): item["containerPort"] for item in container["ports"]}
    assert list(ports.values()) == [port]

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


def test_k8s_pods_stop_gracefully_within_their_grace_period() -> None:
    pod = k8s_one("Deployment")["spec"]["template"]["spec"]
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


def test_k8s_pods_run_as_non_root_with_resources() -> None:
    for kind, pod in pod_specs():
        for container in pod["containers"]:
            context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, kind
            # The image's USER is a name, which the kubelet cannot verify as non-root.
            assert isinstance(context.get("runAsUser"), int) and context["runAsUser"] > 0, kind
            assert context.get("allowPrivilegeEscalation") is False, kind
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), f"{kind} {bound}"


def test_k8s_migration_job_runs_db_upgrade_with_the_same_image_and_settings() -> None:
    job = k8s_one("Job")
    deployment = k8s_one("Deployment")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert runs(container["command"] + container.get("args", [])) is cli.db._upgrade
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (served_by,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == served_by["image"]
    assert container["envFrom"] == served_by["envFrom"]
    assert f"{PREFIX}DATABASE_URL" in k8s_env(pod, container)


def test_k8s_selectors_pick_the_replicas_and_not_the_job() -> None:
    deployment = k8s_one("Deployment")
    replica_labels = deployment["spec"]["template"]["metadata"]["labels"]
    job_labels = k8s_one("Job")["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": k8s_one("Service")["spec"]["selector"],
        "PodDisruptionBudget": k8s_one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector.items() <= replica_labels.items(), kind
        assert not selector.items() <= job_labels.items(), f"the {kind} would pick the Job"


def test_k8s_service_targets_the_container_port() -> None:
    (container,) = k8s_one("Deployment")["spec"]["template"]["spec"]["containers"]
    ports = {item.get("name"): item["containerPort"] for item in container["ports"]}
    for port in k8s_one("Service")["spec"]["ports"]:
        assert ports.get(port["targetPort"], port["targetPort"]) in ports.values()


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
