"""Every benchmark of issue 5 in one run, and their figures against the targets.

    python -m bench.all          # or: make bench (a few minutes)

Runs the engine, HTTP (SQLite, then PostgreSQL) and audit-commit benchmarks
one after another, keeps each one's output in var/bench/, writes all their
JSON to var/bench/results.json and prints the targets table that
docs/performance.md records. The 10-million-row audit benchmark
(bench.audit_scale) and the soak (bench.soak) take much longer and run apart.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "var" / "bench"
RUNS = {
    "engine": ["bench.engine"],
    "http_sqlite": ["bench.http", "--seconds", "8"],
    "http_postgresql": ["bench.http", "--backend", "postgresql", "--seconds", "8"],
    "audit_commit": ["bench.audit_commit"],
}


def _run(name: str, module_args: list[str]) -> dict[str, Any]:
    print(f"== {name}: python -m {' '.join(module_args)}", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", *module_args], cwd=REPO, capture_output=True, text=True, check=True
    )
    (OUT / f"{name}.txt").write_text(result.stdout)
    print(result.stdout, flush=True)
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def _http(rows: list[dict[str, Any]], fields: int, connections: int) -> dict[str, Any]:
    return next(r for r in rows if r["fields"] == fields and r["connections"] == connections)


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, figure, met) for each target of issue 5."""
    engine = {row["agreements"]: row for row in results["engine"]["engine"]}
    small, large = engine[min(engine)], engine[max(engine)]
    rows: list[tuple[str, str, bool]] = [
        (
            "engine p50 ≤ 20 µs per field at 10,000 agreements",
            f"cold {large['cold_p50_us']} µs, warm {large['warm_p50_us']} µs",
            large["cold_p50_us"] <= 20,
        ),
        (
            "… and ≤ 2x the p50 at 10 agreements",
            f"cold {large['cold_p50_us'] / small['cold_p50_us']:.2f}x, "
            f"warm {large['warm_p50_us'] / small['warm_p50_us']:.2f}x",
            large["cold_p50_us"] <= 2 * small["cold_p50_us"],
        ),
        (
            "full reload of 10,000 agreements ≤ 2 s, decisions still answered",
            f"{large['reload_under_load_seconds']} s, {large['decisions_during_reload']:,} "
            f"decisions answered meanwhile (slowest {large['slowest_during_reload_ms']} ms)",
            large["reload_under_load_seconds"] <= 2 and large["decisions_during_reload"] > 0,
        ),
    ]
    for backend in ("sqlite", "postgresql"):
        http = results[f"http_{backend}"]["http"]
        singles = [r for r in http if r["fields"] == 1]
        best = max(r["ratio"] for r in singles)
        at_50 = _http(http, 1, 50)
        batch = _http(http, 100, 1)
        rows += [
            (
                f"single decision ≥ 60 % of bare req/s ({backend})",
                ", ".join(f"{r['ratio']:.0%} at {r['connections']}" for r in singles),
                best >= 0.6,
            ),
            (
                f"p99 ≤ 10 ms at 50 connections ({backend})",
                f"{at_50['accord_p99_ms']} ms",
                at_50["accord_p99_ms"] <= 10,
            ),
            (
                f"batch of 100 fields ≤ 5 ms p50 ({backend})",
                f"{batch['accord_p50_ms']} ms (one connection, wrk, with the loopback trip)",
                batch["accord_p50_ms"] <= 5,
            ),
        ]
    audit = results["audit_commit"]
    group, single = audit["audit"]
    rows.append(
        (
            "group commit vs a commit per decision",
            f"{audit['group_speedup']}x the decisions/s; fsyncs per 1,000: "
            f"{group['fsyncs_per_1000']} vs {single['fsyncs_per_1000']}",
            audit["group_speedup"] > 1,
        )
    )
    return rows


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": len(os.sched_getaffinity(0)),
        },
    }
    for name, module_args in RUNS.items():
        results[name] = _run(name, module_args)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    print("| target | figure | met? |\n|---|---|---|")
    for target, figure, met in targets(results):
        print(f"| {target} | {figure} | {'yes' if met else 'no'} |")


if __name__ == "__main__":
    main()
