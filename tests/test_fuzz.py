"""Schemathesis against the committed openapi.yaml and a running server: no 5xx, every
response as documented (status, content type, body schema)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, ScenarioService

CHECKS = (
    "not_a_server_error,response_schema_conformance,status_code_conformance,"
    "content_type_conformance"
)


@pytest.fixture(scope="module")
def scenario_service(scenario_process_service: ScenarioService) -> ScenarioService:
    """Schemathesis sends its requests over the network: a real `accord serve`."""
    return scenario_process_service


@pytest.mark.slow
def test_generated_requests_get_documented_answers_and_never_a_5xx(
    scenario_service: ScenarioService,
) -> None:
    server = scenario_service.server
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            str(REPO / "openapi.yaml"),
            "--url",
            server.url,
            "-H",
            f"Authorization: Bearer {server.key}",
            "--max-examples",
            "15",
            "--seed",
            "7",
            "--checks",
            CHECKS,
            # revoking would revoke the very key the run uses
            "--exclude-operation-id",
            "revoke_client",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    assert "generated" in summary and "passed" in summary
    assert server.get("/v1/vocabulary").status_code == 200  # the key still works
