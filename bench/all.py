"""Every benchmark in one run, and their figures against the targets.

    python -m bench.all          # or: make bench (a quarter of an hour or more)

Runs the engine, Cerbos-versus-Accord (bench.versus: Cerbos, Accord and a bare endpoint under
wrk on the shared scenario), HTTP (SQLite, then PostgreSQL), audit-commit, register
(1,000,000 entries, both backends) and impact-report benchmarks one after another, keeps each
one's output in var/bench/, writes all their JSON to var/bench/results.json
and prints the targets table that docs/performance.md records. The 10-million-row audit benchmark
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
    "versus": ["bench.versus", "--seconds", "8"],
    "http_sqlite": ["bench.http", "--seconds", "8"],
    "http_postgresql": ["bench.http", "--backend", "postgresql", "--seconds", "8"],
    # the same at two workers, each with its own audit writer chaining through the head row
    "http_postgresql_2_workers": [
        "bench.http",
        *("--backend", "postgresql", "--seconds", "8", "--workers", "2"),
        *("--fields", "1", "20", "--connections", "50"),
    ],
    "audit_commit": ["bench.audit_commit"],
    "register": ["bench.register", "--entries", "1000000"],
    "impact": ["bench.impact"],
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
    """(target, figure, met) for each target of issues 5, 13 and 17."""
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
    one = results["http_postgresql"]["http"]
    for row in results["http_postgresql_2_workers"]["http"]:
        alone = _http(one, row["fields"], row["connections"])
        scaling = row["decisions_per_s"] / alone["decisions_per_s"]
        rows.append(
            (
                f"2 workers ≥ 1.6x the decisions/s of 1 (PostgreSQL, {row['fields']} "
                f"field(s), {row['connections']} connections; wrk shares the 2 cores)",
                f"{scaling:.2f}x ({alone['decisions_per_s']:,} -> {row['decisions_per_s']:,})",
                scaling >= 1.6,
            )
        )
    # Cerbos, Accord and bare side by side (issue 17): bench.versus states its own targets.
    rows += [
        (target, figure, met) for target, figure, met in results["versus"]["versus"]["targets"]
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
    impact = results["impact"]["impact"]
    rows.append(
        (
            f"an impact report on {impact['agreements']:,} agreements ≤ 2 s",
            ", ".join(
                f"{a['action']} p50 {a['p50_s']} s (max {a['max_s']})" for a in impact["actions"]
            )
            + "; the whole vocabulary finds the same: "
            + ("yes" if all(c["same"] for c in impact["whole_vocabulary_checks"]) else "NO"),
            impact["worst_seconds"] <= 2
            and all(c["same"] for c in impact["whole_vocabulary_checks"]),
        )
    )
    return [*rows, *register_targets(results["register"])]


def register_targets(figures: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Issue 13's targets: the register as data, at 1,000,000 entries."""
    rows: list[tuple[str, str, bool]] = []
    for row in figures["register"]:
        backend = row["backend"]
        rows += [
            (
                f"import of {row['entries']:,} entries ≤ 60 s ({backend})",
                f"{row['import_s']} s ({row['rows_per_s']:,} rows/s)",
                row["import_s"] <= 60,
            ),
            (
                f"replica start until ready ≤ 20 s ({backend})",
                f"{row['replica_ready_s']} s for {row['persons']:,} persons",
                row["replica_ready_s"] <= 20,
            ),
            (
                f"RSS once ready ≤ 1 GiB ({backend})",
                f"{row['rss_ready_mib']} MiB",
                row["rss_ready_mib"] <= 1024,
            ),
            (
                f"a register write, until another replica's view has it, ≤ 1 s ({backend})",
                f"p99 {row['write_until_seen_p99_ms']} ms (the poll interval adds up to 0.5 s)",
                row["write_until_seen_p99_ms"] + 500 <= 1000,
            ),
            (
                f"register write p99 ≤ 50 ms ({backend})",
                f"{row['write_p99_ms']} ms (service and commit; p50 {row['write_p50_ms']} ms)",
                row["write_p99_ms"] <= 50,
            ),
            (
                f"event-loop lag during a reload and a bulk import ≤ 5 ms ({backend})",
                f"reload {row['loop_lag_reload_max_ms']} ms, import "
                f"{row['loop_lag_import_max_ms']} ms, a replica taking the import from the "
                f"feed {row['loop_lag_catch_up_max_ms']} ms (this machine's floor, a thread "
                f"running bytecode only: {row['loop_lag_floor_max_ms']} ms)",
                max(row[f"loop_lag_{work}_max_ms"] for work in ("reload", "import", "catch_up"))
                <= 5,
            ),
            (
                f"memory after 1,000 register changes = after 10 ({backend})",
                f"{row['traced_kib_after_10_changes']} KiB after 10, "
                f"{row['traced_kib_after_1000_changes']} KiB after 1,000 (traced)",
                row["traced_kib_after_1000_changes"] - row["traced_kib_after_10_changes"] <= 128,
            ),
        ]
    engine = figures["engine"]
    sizes = sorted(int(key.rsplit("_", 1)[1]) for key in engine if key.startswith("registered_"))
    small, large = (engine[f"registered_p50_us_{size}"] for size in (sizes[0], sizes[-1]))
    rows += [
        (
            "registered person's decision, cold, p50 ≤ 25 µs",
            f"{large} µs at {sizes[-1]:,} entries (a plain decision: {engine['plain_p50_us']} µs)",
            large <= 25,
        ),
        (
            f"growth of that p50 from {sizes[0]:,} to {sizes[-1]:,} entries ≤ 1.3x",
            f"{large / small:.2f}x",
            large <= 1.3 * small,
        ),
        (
            "a blanket consent against 150 consent-based grants ≤ 2x a plain decision",
            f"{engine['blanket_consent_p50_us'] / engine['plain_p50_us']:.2f}x",
            engine["blanket_consent_p50_us"] <= 2 * engine["plain_p50_us"],
        ),
    ]
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
