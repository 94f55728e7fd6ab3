"""Cerbos, Accord and a bare FastAPI endpoint side by side, on the same questions (issue 17).

    python -m bench.versus                                # 8 s per load and server
    python -m bench.versus --backend postgresql           # Accord on a throwaway PostgreSQL
    python -m bench.versus --seconds 1 --connections 2    # a smoke run

The question is the shared scenario's (../shared/scenarios/blackpool-mash): may
la.blackpool.childrens-services see fields of a 12-year-old that police.lancashire holds,
for safeguarding.children. Accord serves the scenario's vocabulary and agreements. The
Cerbos PDP (npm package `cerbos`, installed once under var/cerbos) answers from a resource
policy generated from Accord's own access plan for that pair, so from the same agreements:
a field permitted outright is an ALLOW rule on the purpose; one within an agreement's age
bounds, with consent, or by break-glass only is an ALLOW rule that also needs the
person's age in bounds, a `consent` resource attribute, or an `emergency` principal
attribute. Before measuring, both are asked all 19 leaf fields once and must permit the
same ones (exit 1 if not): the comparison is of equal work.

Loads: a single decision (one field; Cerbos: one resource, one action) and a batch of
the 19 leaf fields (Accord /v1/decisions/batch; Cerbos: one resource, 19 actions), at 1,
10 and 50 connections, measured with wrk on loopback. All three servers run for the
whole run and are measured in turn for each load and connection count (Cerbos, Accord,
bare), so drift in the machine hits all three alike. Each audits as it does in
production: Accord commits every decision's record before it answers; Cerbos, audit on
with its file backend, writes an access and a decision entry per request to a file as it
answers, with no fsync, and answers even when the write fails. Needs Debian's wrk and
npm. Prints a table, the targets with met / not met, and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from app.decision.engine import PersonFacts
from app.decision.plans import NO_PERSON, Plan, PlannedField, make_plan
from app.policy.agreements import parse_agreement
from app.policy.compiler import compile_policy
from app.policy.files import agreement_documents, load_vocabulary
from app.runtime.enforcer import CandidateEnforcer
from app.store.database import upgrade_schema
from bench import audit_signing_env
from bench.http import _process, _wrk
from tests.postgres import ThrowawayPostgres, _free_port

REPO = Path(__file__).resolve().parents[1]
SCENARIO = Path(os.environ.get("ACCORD_SHARED_DIR", REPO.parent / "shared")) / "scenarios"
SCENARIO /= "blackpool-mash"
CERBOS_VERSION = "0.51.0"
CERBOS_PREFIX = REPO / "var" / "cerbos"
CERBOS_CHECK = "/api/check/resources"
SERVERS = ("cerbos", "accord", "bare")

REQUESTER = "la.blackpool.childrens-services"
HOLDER = "police.lancashire"
PURPOSE = "safeguarding.children"
PERSON = {"id": "P-101", "attributes": {"age": 12}}
ACCORD_BASE = {
    "requester": REQUESTER,
    "holder": HOLDER,
    "subject": PERSON,
    "purpose": PURPOSE,
    "context": {"user": "bench", "case_ref": "BENCH-1"},
}


def resource_kind(holder: str) -> str:
    """The holder's records as a Cerbos resource kind (a field is an action on it)."""
    return "record_" + holder.replace(".", "_").replace("-", "_")


RESOURCE_KIND = resource_kind(HOLDER)
CERBOS_PRINCIPAL = {"id": REQUESTER, "roles": [REQUESTER], "attr": {"purpose": PURPOSE}}
CERBOS_RESOURCE = {"kind": RESOURCE_KIND, "id": PERSON["id"], "attr": PERSON["attributes"]}


# -- The Cerbos PDP from npm ------------------------------------------------------------------


def _cerbos_binary() -> Path:
    """The platform binary the `cerbos` npm package depends on (as its index.js finds it),
    installed under var/cerbos unless the pinned version is there already."""
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
    package = f"cerbos-{sys.platform}-{arch.get(platform.machine().lower(), platform.machine())}"
    folder = CERBOS_PREFIX / "node_modules" / "@cerbos" / package

    def installed() -> Path | None:
        try:
            main = json.loads((folder / "package.json").read_text())["main"]
        except (OSError, KeyError, ValueError):
            return None
        binary = (folder / main).resolve()
        if not binary.is_file():
            return None
        version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=False
        ).stdout
        return binary if version.split()[:1] == [CERBOS_VERSION] else None

    binary = installed()
    if binary is None:
        if shutil.which("npm") is None:
            sys.exit("npm is needed to install Cerbos: apt-get install npm")
        print(f"installing cerbos@{CERBOS_VERSION} from npm into {CERBOS_PREFIX}", file=sys.stderr)
        subprocess.run(
            [
                "npm",
                "install",
                "--prefix",
                str(CERBOS_PREFIX),
                "--no-audit",
                "--no-fund",
                f"cerbos@{CERBOS_VERSION}",
            ],
            check=True,
            stdout=sys.stderr,
        )
        binary = installed()
    if binary is None:
        sys.exit(f"no Cerbos {CERBOS_VERSION} binary in {folder} after npm install")
    return binary


def _access_plan() -> tuple[tuple[str, ...], Plan]:
    """The leaf fields and Accord's access plan for the pair, from the scenario's files as
    `accord decide` reads them. The plan is made for no one in particular (no age known),
    so a field within an agreement's age bounds stays a condition on the age."""
    vocabulary = load_vocabulary(SCENARIO / "vocabulary.yaml")
    agreements = [
        parse_agreement(document, vocabulary, source=source)
        for source, document in agreement_documents(SCENARIO / "agreements")
    ]
    policy = compile_policy(
        revision=0,
        vocabulary=vocabulary,
        agreements=agreements,
        model_text=(REPO / "policies" / "model.conf").read_text(encoding="utf-8"),
    )
    plan = make_plan(
        policy,
        requester=REQUESTER,
        purpose=PURPOSE,
        holders=[HOLDER],
        facts=PersonFacts(NO_PERSON, age=None),
        now=datetime.now(UTC),
        enforcer=CandidateEnforcer(policy.model_text),
        memo=None,
    )
    return policy.vocabulary.fields.leaves(), plan


def _terms(kind: str, planned: PlannedField) -> list[str]:
    """The condition a field of the plan's list `kind` is permitted on, besides the purpose."""
    if kind == "within-age-bounds":
        age = "request.resource.attr.age"
        # has(): a person of unknown age is denied, as Accord fails closed.
        bounds = [f"has({age})"]
        if planned.min_age is not None:
            bounds.append(f"{age} >= {planned.min_age}")
        if planned.max_age is not None:
            bounds.append(f"{age} <= {planned.max_age}")
        return [" && ".join(bounds)]
    if kind == "with-consent":
        return ["has(request.resource.attr.consent) && request.resource.attr.consent == true"]
    if kind == "break-glass-only":  # an emergency, with a justification as Accord asks
        principal = "request.principal.attr"
        return [
            f"has({principal}.emergency) && {principal}.emergency == true",
            f'has({principal}.justification) && {principal}.justification != ""',
        ]
    return []


def cerbos_policy(plan: Plan) -> dict[str, Any]:
    """A Cerbos resource policy for the plan's one holder: an ALLOW rule per list of the
    plan, agreement and condition, for the requester's role, on the plan's purpose."""
    [holder] = plan.holders
    lists = {
        "permitted": holder.permitted,
        "within-age-bounds": holder.within_age_bounds,
        "with-consent": holder.with_consent,
        "break-glass-only": holder.break_glass_only,
    }
    rules: list[dict[str, Any]] = []
    for kind, planned_fields in lists.items():
        groups: dict[tuple[str, int, tuple[str, ...]], list[str]] = defaultdict(list)
        for planned in planned_fields:
            terms = tuple(_terms(kind, planned))
            groups[(planned.agreement_id, planned.agreement_version, terms)].append(planned.field)
        for (agreement, version, terms), actions in groups.items():
            name = f"{agreement}-v{version}-{kind}"
            taken = sum(1 for rule in rules if rule["name"].startswith(name))
            exprs = [f'request.principal.attr.purpose == "{plan.purpose}"', *terms]
            rules.append(
                {
                    "name": f"{name}-{taken + 1}" if taken else name,
                    "actions": actions,
                    "effect": "EFFECT_ALLOW",
                    "roles": [plan.requester],
                    "condition": {"match": {"all": {"of": [{"expr": e} for e in exprs]}}},
                }
            )
    return {
        "apiVersion": "api.cerbos.dev/v1",
        "resourcePolicy": {
            "resource": resource_kind(holder.holder),
            "version": "default",
            "rules": rules,
        },
    }


def _cerbos_files(binary: Path, plan: Plan, folder: Path) -> tuple[Path, str, Path]:
    """The generated policy (checked with `cerbos compile`) and a server configuration:
    HTTP and gRPC on free loopback ports, audit on with the file backend; the config
    file, the HTTP URL and the audit file."""
    policies = folder / "policies"
    policies.mkdir()
    document = cerbos_policy(plan)
    kind = document["resourcePolicy"]["resource"]
    (policies / f"{kind}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    compiled = subprocess.run(
        [binary, "compile", "--skip-tests", str(policies)], capture_output=True, text=True
    )
    if compiled.returncode != 0:
        sys.exit(f"cerbos compile refused the generated policy:\n{compiled.stdout}")
    http_port, grpc_port = _free_port(), _free_port()
    audit_file = folder / "audit.log"
    config = {
        "server": {
            "httpListenAddr": f"127.0.0.1:{http_port}",
            "grpcListenAddr": f"127.0.0.1:{grpc_port}",
        },
        "storage": {
            "driver": "disk",
            "disk": {"directory": str(policies), "watchForChanges": False},
        },
        "audit": {
            "enabled": True,
            "accessLogsEnabled": True,
            "decisionLogsEnabled": True,
            "backend": "file",
            # Rotated so that a long run's entries stay within a few hundred MB.
            "file": {
                "path": str(audit_file),
                "logRotation": {"maxFileSizeMB": 100, "maxFileCount": 2},
            },
        },
    }
    (folder / "conf.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder / "conf.yaml", f"http://127.0.0.1:{http_port}", audit_file


def _cerbos_body(actions: list[str]) -> str:
    return json.dumps(
        {
            "principal": CERBOS_PRINCIPAL,
            "resources": [{"actions": actions, "resource": CERBOS_RESOURCE}],
        }
    )


def _accord_body(fields: list[str]) -> tuple[str, str]:
    if len(fields) == 1:
        return "/v1/decisions", json.dumps({**ACCORD_BASE, "field": fields[0]})
    return "/v1/decisions/batch", json.dumps({**ACCORD_BASE, "fields": fields})


# -- Accord on the scenario -------------------------------------------------------------------


def _accord_key(env: dict[str, str], folder: Path) -> str:
    """The scenario's agreements imported and a decide:any client for the requester; its key."""
    accord = [sys.executable, "-m", "app.cli"]
    run = {**os.environ, **env}
    upgrade_schema(env["ACCORD_DATABASE_URL"])
    subprocess.run(
        [*accord, "agreements", "import", str(SCENARIO / "agreements")],
        env=run,
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    key_file = folder / "accord.key"
    subprocess.run(
        [
            *accord,
            "clients",
            "create",
            "--id",
            "bench-versus",
            "--scopes",
            "decide:any",
            "--agencies",
            REQUESTER,
            "--key-file",
            str(key_file),
        ],
        env=run,
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return key_file.read_text().strip()


# -- The run ----------------------------------------------------------------------------------


def _same_answers(
    urls: dict[str, str], key: str, fields: list[str], audit_file: Path
) -> dict[str, Any]:
    """Cerbos asked the 19 actions once and Accord the 19-field batch once, with the bodies
    the loads send: the fields each permits; exit 1 unless the same."""
    answer = httpx.post(
        urls["cerbos"] + CERBOS_CHECK,
        content=_cerbos_body(fields),
        headers={"Content-Type": "application/json"},
    )
    answer.raise_for_status()
    [result] = answer.json()["results"]
    cerbos = [field for field in fields if result["actions"][field] == "EFFECT_ALLOW"]
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    path, body = _accord_body(fields)
    batch = httpx.post(urls["accord"] + path, content=body, headers=auth)
    batch.raise_for_status()
    accord = [field for field in fields if field in batch.json()["permitted"]]
    every = httpx.post(
        urls["accord"] + "/v1/decisions/batch", json={**ACCORD_BASE, "fields": "*"}, headers=auth
    )
    every.raise_for_status()
    leaves = [decision["field"] for decision in every.json()["decisions"]]
    call_id = answer.json()["cerbosCallId"]
    audited = call_id in audit_file.read_text()
    check = {
        "fields": fields,
        "accord_star_fields": leaves,
        "cerbos_permitted": cerbos,
        "accord_permitted": accord,
        "cerbos_audited": audited,
        "same": cerbos == accord and sorted(leaves) == sorted(fields),
    }
    if not check["same"]:
        print(json.dumps(check, indent=1), file=sys.stderr)
        sys.exit("Cerbos and Accord do not permit the same fields: not equal work")
    if not audited:
        sys.exit(f"Cerbos's decision {call_id} is not in its audit file {audit_file}")
    return check


def _measure(
    urls: dict[str, str], key: str, loads: dict[str, list[str]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """For each load and connection count, wrk against Cerbos, Accord and bare in turn."""
    rows = []
    for load, fields in loads.items():
        path, accord_body = _accord_body(fields)
        requests = {  # path, body, bearer key
            "cerbos": (CERBOS_CHECK, _cerbos_body(fields), None),
            "accord": (path, accord_body, key),
            "bare": (path, accord_body, None),
        }
        for name in SERVERS:  # warm up
            _wrk(urls[name], *requests[name], 2, 1)
        for connections in args.connections:
            for name in SERVERS:
                run = _wrk(urls[name], *requests[name], connections, args.seconds)
                rows.append(
                    {
                        "load": load,
                        "fields": len(fields),
                        "connections": connections,
                        "server": name,
                        "rps": round(run["rps"], 1),
                        "decisions_per_s": round(run["rps"] * len(fields)),
                        "p50_ms": run["p50_ms"],
                        "p99_ms": run["p99_ms"],
                        "errors": run["errors"],
                    }
                )
    return rows


def _row(rows: list[dict[str, Any]], load: str, connections: int, server: str) -> dict[str, Any]:
    return next(
        r for r in rows if (r["load"], r["connections"], r["server"]) == (load, connections, server)
    )


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """(target, figure, met) for issue 17's targets. A smoke run without 10 or 50
    connections is held to them at its most connections instead."""
    counts = sorted({r["connections"] for r in rows})
    top = 50 if 50 in counts else counts[-1]
    busy = [c for c in counts if c in (10, 50)] or [counts[-1]]

    def single(connections: int, server: str) -> dict[str, Any]:
        return _row(rows, "single", connections, server)

    accord_top, bare_top = single(top, "accord"), single(top, "bare")
    ratio = accord_top["rps"] / bare_top["rps"]
    batches = [
        (c, _row(rows, "batch", c, "accord"), _row(rows, "batch", c, "cerbos")) for c in counts
    ]
    return [
        (
            f"single decisions: Accord ≥ 60 % of bare req/s at {top} connections",
            f"{ratio:.0%} ({accord_top['rps']:,.0f} vs {bare_top['rps']:,.0f} req/s)",
            ratio >= 0.6,
        ),
        (
            "single decisions: Accord ≥ Cerbos req/s at "
            + " and at ".join(str(c) for c in busy)
            + " connections",
            ", ".join(
                f"{single(c, 'accord')['rps'] / single(c, 'cerbos')['rps']:.0%} of Cerbos at {c}"
                for c in busy
            ),
            all(single(c, "accord")["rps"] >= single(c, "cerbos")["rps"] for c in busy),
        ),
        (
            "batches: Accord decisions/s ≥ Cerbos decisions/s at every connection count",
            ", ".join(
                f"{a['decisions_per_s']:,} vs {b['decisions_per_s']:,} at {c}"
                for c, a, b in batches
            ),
            all(a["decisions_per_s"] >= b["decisions_per_s"] for _, a, b in batches),
        ),
        (
            f"single decisions at {top} connections: Accord p99 ≤ 10 ms",
            f"{accord_top['p99_ms']} ms (Cerbos {single(top, 'cerbos')['p99_ms']} ms)",
            accord_top["p99_ms"] <= 10,
        ),
    ]


def _cell(row: dict[str, Any]) -> str:
    rate = f"{row['rps']:,.0f} req/s"
    if row["fields"] > 1:
        rate += f" = {row['decisions_per_s']:,} decisions/s"
    errors = f", {row['errors']:.0f} non-2xx" if row["errors"] else ""
    return f"{rate} (p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms{errors})"


def _print_table(rows: list[dict[str, Any]]) -> None:
    print("| load | Cerbos | Accord | bare | Accord ÷ Cerbos | Accord ÷ bare |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if row["server"] != "accord":
            continue
        load, connections = row["load"], row["connections"]
        cerbos, bare = (_row(rows, load, connections, s) for s in ("cerbos", "bare"))
        name = "single decision" if row["fields"] == 1 else f"batch of {row['fields']}"
        print(
            f"| {name}, {connections} conn. | {_cell(cerbos)} | {_cell(row)} | {_cell(bare)} "
            f"| {row['rps'] / cerbos['rps']:.2f} | {row['rps'] / bare['rps']:.2f} |"
        )


def _servers(
    binary: Path, cerbos_config: Path, cerbos_url: str
) -> dict[str, tuple[list[str], str, str]]:
    """Each server's command, URL and readiness path, on free loopback ports."""
    accord_port, bare_port = _free_port(), _free_port()
    return {
        "cerbos": (
            [
                str(binary),
                "server",
                f"--config={cerbos_config}",
                "--log-level=warn",  # its access log is the audit's, on (accessLogsEnabled)
                f"--debug-listen-addr=127.0.0.1:{_free_port()}",
            ],
            cerbos_url,
            "/_cerbos/health",
        ),
        "accord": (
            [sys.executable, "-m", "app.cli", "serve", "--port", str(accord_port)],
            f"http://127.0.0.1:{accord_port}",
            "/readyz",
        ),
        "bare": (
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.bare_app:app",
                "--port",
                str(bare_port),
                "--log-level",
                "warning",
            ],
            f"http://127.0.0.1:{bare_port}",
            "/docs",
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 10, 50])
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    binary = _cerbos_binary()
    leaves, plan = _access_plan()
    fields = list(leaves)
    with ExitStack() as stack:
        # Removed at the end, with the Accord database and Cerbos's audit file.
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-versus-")))
        cerbos_config, cerbos_url, audit_file = _cerbos_files(binary, plan, folder)
        if args.backend == "postgresql":
            postgres = ThrowawayPostgres()
            postgres.start()
            stack.callback(postgres.stop)
            database_url = postgres.new_database()
        else:
            database_url = f"sqlite:///{folder / 'accord.db'}"
        env = {
            "ACCORD_DATABASE_URL": database_url,
            "ACCORD_LOG_LEVEL": "info",  # the access log on: a JSON line per request
            "ACCORD_WORKERS": "1",
            "ACCORD_VOCABULARY_FILE": str(SCENARIO / "vocabulary.yaml"),
            # One key drives the whole load: measure the service, not the per-client limits.
            "ACCORD_CLIENT_RATE_PER_SECOND": "1000000",
            "ACCORD_CLIENT_MAX_CONCURRENT": "100000",
            "CERBOS_NO_TELEMETRY": "1",
            **audit_signing_env(),
        }
        key = _accord_key(env, folder)
        urls = {}
        for name, (command, url, ready) in _servers(binary, cerbos_config, cerbos_url).items():
            stack.enter_context(_process(command, env, url, ready))
            urls[name] = url
        check = _same_answers(urls, key, fields, audit_file)
        single = next(field for field in fields if field in check["accord_permitted"])
        rows = _measure(urls, key, {"single": [single], "batch": fields}, args)

    _print_table(rows)
    met = targets(rows)
    print()
    for target, figure, ok in met:
        print(f"- {target}: {figure} — {'met' if ok else 'NOT MET'}")
    question = {"requester": REQUESTER, "holder": HOLDER, "purpose": PURPOSE, "subject": PERSON}
    print(
        json.dumps(
            {
                "versus": {
                    "backend": args.backend,
                    "cerbos_version": CERBOS_VERSION,
                    "question": {**question, "single_field": single},
                    "check": check,
                    "rows": rows,
                    "targets": met,
                }
            }
        )
    )


if __name__ == "__main__":
    main()
