"""The benchmarks still run (a small smoke run each; how fast is measured in bench/, not here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # benchmark smoke runs


def _last_json_line(*args: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_audit_scale_benchmark_builds_queries_and_verifies() -> None:
    figures = _last_json_line("bench.audit_scale", "--rows", "3000", "--queries", "5")
    assert figures["rows"] == 3000
    assert isinstance(figures["verify_seconds"], float | int)
    assert isinstance(figures["person_query_p50_ms"], float | int)


@pytest.mark.postgres  # the benchmark starts its own throwaway PostgreSQL (tests/postgres.py)
def test_audit_scale_benchmark_on_postgresql_purges_a_month_under_load_and_verifies() -> None:
    figures = _last_json_line(
        "bench.audit_scale", "--backend", "postgresql", "--rows", "3000", "--queries", "5"
    )
    assert (figures["backend"], figures["rows"]) == ("postgresql", 3000)
    for name in (
        "build_seconds",
        "build_rows_per_second",
        "person_query_p50_ms",
        "person_query_p99_ms",
        "newest_day_verify_seconds",
        "verify_seconds",
        "verify_rows_per_second",
        "verify_peak_rss_mib",
        "purge_seconds",
        "write_before_purge_p50_ms",
        "write_before_purge_p99_ms",
        "write_during_purge_p50_ms",
        "write_during_purge_p99_ms",
    ):
        assert isinstance(figures[name], float | int), name
    # the newest day's rows only: about a 365th of them, not the whole chain
    assert 0 < figures["newest_day_verify_rows"] < 3000  # type: ignore[operator]
    assert figures["purge_rows_removed"] > 0  # type: ignore[operator]
    assert figures["writes_before_purge"] > 0 and figures["writes_during_purge"] > 0  # type: ignore[operator]
    assert figures["write_failures"] == 0
    assert figures["chain_intact_after_purge"] is True and figures["chain_verified"] is True


def test_engine_benchmark_compiles_and_evaluates() -> None:
    figures = _last_json_line("bench.engine", "--sizes", "5", "20")["engine"]
    assert isinstance(figures, list)
    assert [row["agreements"] for row in figures] == [5, 20]
    assert all(row["casbin_lines"] > 0 for row in figures)


def test_audit_commit_benchmark_compares_both_modes() -> None:
    figures = _last_json_line("bench.audit_commit", "--decisions", "200", "--callers", "10")
    modes = figures["audit"]
    assert isinstance(modes, list)
    assert [row["mode"] for row in modes] == ["group", "single"]
    assert modes[1]["commits"] == 200  # one commit per decision
    assert modes[0]["commits"] <= 200


def test_http_benchmark_loads_accord_and_the_bare_endpoint() -> None:
    figures = _last_json_line(
        "bench.http", "--seconds", "1", "--connections", "2", "--fields", "1", "20"
    )["http"]
    assert isinstance(figures, list)
    assert [(row["fields"], row["connections"]) for row in figures] == [(1, 2), (20, 2)]
    assert all(row["accord_errors"] == 0 and row["accord_rps"] > 0 for row in figures)


def test_soak_benchmark_samples_the_server_and_counts_every_answer() -> None:
    figures = _last_json_line("bench.soak", "--minutes", "0.1", "--sample-seconds", "2")["soak"]
    assert isinstance(figures, dict)
    assert figures["answered"] == figures["audit_rows"] > 0
    assert figures["answered_missing_from_audit"] == 0 and figures["chain_intact"] is True
    samples = figures["samples"]
    assert len(samples) >= 3  # the baseline, at least one interval, the end
    assert all(sample["rss_mib"] > 0 and sample["fds"] > 0 for sample in samples)


def test_register_benchmark_imports_loads_writes_and_decides() -> None:
    printed = _last_json_line("bench.register", "--backend", "sqlite", "--entries", "500")
    figures, engine = printed["register"], printed["engine"]
    assert isinstance(figures, list)
    [row] = figures
    assert (row["backend"], row["entries"]) == ("sqlite", 500)
    assert row["rows_per_s"] > 0 and row["export_rows_per_s"] > 0
    assert row["persons"] > 0 and row["replica_ready_s"] > 0 and row["rss_ready_mib"] > 0
    assert row["write_p99_ms"] >= row["write_p50_ms"] > 0
    assert isinstance(engine, dict) and engine["registered_p50_us_500"] > 0


def test_impact_benchmark_times_each_action_and_checks_the_whole_vocabulary() -> None:
    figures = _last_json_line("bench.impact", "--agreements", "40", "--changes", "1")["impact"]
    assert isinstance(figures, dict)
    assert [row["action"] for row in figures["actions"]] == [
        "activate",
        "suspend",
        "revoke",
        "version",
    ]
    assert all(check["same"] for check in figures["whole_vocabulary_checks"])


def test_versus_benchmark_loads_cerbos_accord_and_bare() -> None:
    # The first run installs the Cerbos PDP from npm into var/cerbos (hence the timeout).
    figures = _last_json_line("bench.versus", "--seconds", "1", "--connections", "2")["versus"]
    assert isinstance(figures, dict)
    rows = figures["rows"]
    assert {(row["load"], row["server"]) for row in rows} == {
        (load, server) for load in ("single", "batch") for server in ("cerbos", "accord", "bare")
    }
    assert all(row["rps"] > 0 and row["errors"] == 0 for row in rows)
    check = figures["check"]  # both asked every leaf field once: equal work
    assert check["same"] and len(check["fields"]) == 19
    assert check["cerbos_permitted"] == check["accord_permitted"] != []
    assert [target for target, _, _ in figures["targets"]]


@pytest.mark.postgres  # the benchmark starts its own throwaway PostgreSQL (tests/postgres.py)
def test_chain_throughput_benchmark_counts_every_row_and_verifies() -> None:
    printed = _last_json_line("bench.chain_throughput", "--seconds", "1", "--processes", "1", "2")
    figures = printed["chain_throughput"]
    assert isinstance(figures, dict)
    assert figures["all_verified"] is True
    loads = figures["loads"]
    assert [(row["rows_per_write"], row["processes"]) for row in loads] == [
        (1, 1),
        (1, 2),
        (20, 1),
        (20, 2),
    ]
    for row in loads:
        check = row["check"]  # the chain across every process's rows, and every row counted
        assert check["ok"] and check["intact"] and check["seq_gapless"], check
        assert check["rows_equal_acknowledged"], check
        assert check["rows"] == check["acknowledged"] == check["head_seq"] > 0, check
        assert row["failures"] == 0
        assert len(row["each_process_decisions_per_s"]) == row["processes"]
        assert all(rate > 0 for rate in row["each_process_decisions_per_s"])
        assert row["commits_per_s"] > 0 and row["lock_held_ms_mean"] > 0
