"""HTTP benchmark: `accord serve` under wrk, against a bare FastAPI endpoint in the same run.

    python -m bench.http                          # SQLite, 10 s per load
    python -m bench.http --backend postgresql     # a throwaway PostgreSQL (initdb/pg_ctl)
    python -m bench.http --seconds 2 --connections 1 10   # a smoke run

Loads: single decisions, batches of 20 and of 100 fields, at 1, 10 and 50
connections, audit on and durable (every decision committed before its
answer). The bare endpoint (bench/bare_app.py) parses the same JSON with the
same uvicorn settings; the ratio Accord / bare compares across noisy machines.
Needs Debian's wrk. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.store.database import upgrade_schema
from bench import audit_signing_env
from tests.postgres import ThrowawayPostgres

REPO = Path(__file__).resolve().parents[1]
FIELDS = [f"group-{g}.item-{i}" for g in range(12) for i in range(10)]
BASE = {
    "requester": "la.bench.childrens-services",
    "holder": "police.bench",
    "subject": {"id": "P-1001", "attributes": {"age": 12}},
    "purpose": "safeguarding.children",
    "context": {"user": "bench", "case_ref": "BENCH-1"},
}


def _partnership(folder: Path) -> tuple[Path, Path]:
    """A vocabulary with 120 leaf fields and agreements that grant some and not others."""
    vocabulary = {
        "agencies": [
            {"id": "la.bench.childrens-services", "groups": ["local-authority"]},
            {"id": "police.bench", "groups": ["police"]},
        ],
        "purposes": [{"id": "safeguarding"}, {"id": "safeguarding.children"}],
        "fields": [{"id": f"group-{g}", "class": "personal"} for g in range(12)]
        + [{"id": field} for field in FIELDS],
    }
    agreement = {
        "id": "isa-bench",
        "title": "Benchmark agreement",
        "status": "active",
        "valid_from": "2025-01-01",
        "valid_until": "2099-01-01",
        "providers": ["police"],
        "recipients": ["la.bench.childrens-services"],
        "lawful_basis": {"article6": "public-task"},
        "grants": [
            {
                "purposes": ["safeguarding.children"],
                "fields": [f"group-{g}" for g in range(0, 12, 2)],
                "subject": {"max_age": 17},
            }
        ],
    }
    (folder / "agreements").mkdir()
    (folder / "vocabulary.json").write_text(json.dumps(vocabulary))
    (folder / "agreements" / "isa-bench.yaml").write_text(json.dumps(agreement))
    return folder / "vocabulary.json", folder / "agreements"


def _body(fields: int) -> tuple[str, str]:
    if fields == 1:
        return "/v1/decisions", json.dumps({**BASE, "field": FIELDS[0]})
    return "/v1/decisions/batch", json.dumps({**BASE, "fields": FIELDS[:fields]})


LUA = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
"""
BEARER = 'wrk.headers["Authorization"] = "Bearer %s"\n'


def _wait_ready(url: str, path: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


@contextmanager
def _process(command: list[str], env: dict[str, str], url: str, ready: str) -> Iterator[None]:
    with tempfile.TemporaryFile(prefix="bench-server-") as log:
        process = subprocess.Popen(
            command, env={**os.environ, **env}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_ready(url, ready)
            yield
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wrk(
    url: str, path: str, body: str, key: str | None, connections: int, seconds: int
) -> dict[str, float]:
    """wrk POSTing `body`, with `key` as a bearer token if given (bench/versus.py's Cerbos
    takes none)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % body + (BEARER % key if key else ""))
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(min(connections, 2)),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            script.name,
            url + path,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--fields", type=int, nargs="+", default=[1, 20, 100])
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    postgres = None
    if args.backend == "postgresql":
        postgres = ThrowawayPostgres()
        postgres.start()
        url = postgres.new_database()
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    vocabulary_file, agreements_dir = _partnership(Path(tempfile.mkdtemp()))
    env = {
        "ACCORD_DATABASE_URL": url,
        "ACCORD_LOG_LEVEL": "info",  # the access log on: a JSON line per request
        "ACCORD_WORKERS": str(args.workers),
        "ACCORD_VOCABULARY_FILE": str(vocabulary_file),
        # One key drives the whole load: measure the service, not the per-client limits.
        "ACCORD_CLIENT_RATE_PER_SECOND": "1000000",
        "ACCORD_CLIENT_MAX_CONCURRENT": "100000",
        **audit_signing_env(),
    }
    try:
        upgrade_schema(url)
        accord = [sys.executable, "-m", "app.cli"]
        run = {**os.environ, **env}
        subprocess.run(
            [*accord, "agreements", "import", str(agreements_dir)],
            env=run,
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        key_file = Path(tempfile.mkdtemp()) / "key"
        subprocess.run(
            [
                *accord,
                "clients",
                "create",
                "--id",
                "bench",
                "--scopes",
                "decide:any",
                "--agencies",
                "police.bench",
                "--key-file",
                str(key_file),
            ],
            env=run,
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        key = key_file.read_text().strip()
        results = []
        servers = {
            "accord": ([*accord, "serve", "--port", "8765"], "http://127.0.0.1:8765", "/readyz"),
            "bare": (
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bench.bare_app:app",
                    "--port",
                    "8766",
                    "--workers",
                    str(args.workers),
                    "--log-level",
                    "warning",
                ],
                "http://127.0.0.1:8766",
                "/docs",
            ),
        }
        measured: dict[str, dict[tuple[int, int], dict[str, float]]] = {}
        for name, (command, base_url, ready) in servers.items():
            measured[name] = {}
            with _process(command, env, base_url, ready):
                for fields in args.fields:
                    path, body = _body(fields)
                    _wrk(base_url, path, body, key, 2, 1)  # warm up
                    for connections in args.connections:
                        measured[name][(fields, connections)] = _wrk(
                            base_url, path, body, key, connections, args.seconds
                        )
        for (fields, connections), accord_run in measured["accord"].items():
            bare_run = measured["bare"][(fields, connections)]
            batch = fields
            results.append(
                {
                    "backend": args.backend,
                    "fields": batch,
                    "connections": connections,
                    "accord_rps": round(accord_run["rps"], 1),
                    "decisions_per_s": round(accord_run["rps"] * batch),
                    "accord_p50_ms": accord_run["p50_ms"],
                    "accord_p99_ms": accord_run["p99_ms"],
                    "accord_errors": accord_run["errors"],
                    "bare_rps": round(bare_run["rps"], 1),
                    "ratio": round(accord_run["rps"] / bare_run["rps"], 3),
                }
            )
    finally:
        if postgres is not None:
            postgres.stop()
    columns = list(results[0])
    print("  ".join(f"{c:>15}" for c in columns))
    for row in results:
        print("  ".join(f"{row[c]!s:>15}" for c in columns))
    print(json.dumps({"http": results}))


if __name__ == "__main__":
    main()
