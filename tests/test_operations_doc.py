"""docs/operations.md cannot drift: every setting and every exposed metric family is in it.

The settings come from `Settings.model_fields`; the metric families from the
`/metrics` answer of a real `accord serve`, cross-checked against the metric
objects `app.runtime.metrics` defines, so a new setting or metric fails here until the
operators' guide names it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

import app.runtime.metrics
from app.config import Settings
from app.store.database import upgrade_schema
from tests.conftest import REPO, Server

DOC = REPO / "docs" / "operations.md"


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _mentions(text: str, name: str) -> bool:
    """`name` as a whole identifier: `accord_x` is not found inside `accord_x_bucket`."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text) is not None


def _variable(field: str) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def test_every_setting_has_a_row_in_the_configuration_reference_with_its_default() -> None:
    lines = _doc().splitlines()
    missing, wrong_default = [], []
    for name, field in Settings.model_fields.items():
        variable = _variable(name)
        rows = [line for line in lines if line.startswith(f"| `{variable}`")]
        if not rows:
            missing.append(variable)
            continue
        default = field.default
        if isinstance(default, int | float) and not isinstance(default, bool):
            spellings = {str(default), f"{default:g}"}
            if not any(
                re.search(rf"(?<![\d.]){re.escape(s)}(?![\d.])", rows[0]) for s in spellings
            ):
                wrong_default.append(f"{variable} (default {default})")
    assert not missing, f"docs/operations.md has no configuration row for: {missing}"
    assert not wrong_default, f"docs/operations.md shows another default for: {wrong_default}"


def test_every_setting_is_named_by_its_environment_variable() -> None:
    text = _doc()
    absent = [
        _variable(name) for name in Settings.model_fields if not _mentions(text, _variable(name))
    ]
    assert not absent, f"not in docs/operations.md: {absent}"
    assert _mentions(text, "PROMETHEUS_MULTIPROC_DIR")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'accord.db'}"
    upgrade_schema(url)
    return url


def _exposed_families(exposition: str) -> dict[str, str]:
    """Family name as exposed (`# TYPE` lines) -> type, without the `_created` companions."""
    typed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE))
    companions = {
        name
        for name, kind in typed.items()
        if kind == "gauge"
        and name.endswith("_created")
        and (
            typed.get(name.removesuffix("_created") + "_total") == "counter"
            or typed.get(name.removesuffix("_created")) == "histogram"
        )
    }
    return {name: kind for name, kind in typed.items() if name not in companions}


def test_every_metric_family_the_service_exposes_is_documented(
    sqlite_url: str, server_factory: Callable[[dict[str, str]], Server]
) -> None:
    server = server_factory({"ACCORD_DATABASE_URL": sqlite_url})
    response = server.get("/metrics")
    assert response.status_code == 200, response.text
    families = _exposed_families(response.text)

    # The scrape holds every metric app/runtime/metrics.py defines, by its exposed name.
    defined = {
        family.name + ("_total" if family.type == "counter" else ""): family.type
        for metric in vars(app.runtime.metrics).values()
        if isinstance(metric, MetricWrapperBase)
        for family in metric.describe()
    }
    assert defined, "app.runtime.metrics defines no metric"
    assert {name: families.get(name) for name in defined} == defined

    text = _doc()
    undocumented = []
    for name, kind in sorted(families.items()):
        if name.startswith("accord_"):
            needed = [name] + ([f"{name}_bucket"] if kind == "histogram" else [])
            undocumented += [n for n in needed if not _mentions(text, n)]
        elif f"`{name.split('_')[0]}_*`" not in text:  # process_*, python_*: as a group
            undocumented.append(name)
    assert not undocumented, f"exposed by /metrics but not in docs/operations.md: {undocumented}"
