"""`accord policy export` for a Casbin user: the lines any Casbin loads, and the obligations a
permit carries, keyed by the `source` token of the line that permitted it."""

from __future__ import annotations

import csv
from pathlib import Path

import casbin
import pytest

from app.policy.lines import POLICY_TOKENS
from tests.conftest import REPO, accord

pytestmark = pytest.mark.slow  # two `accord` processes


def test_an_exported_permit_names_its_obligations(database_url: str, tmp_path: Path) -> None:
    env = {"ACCORD_DATABASE_URL": database_url}
    accord("agreements", "import", str(REPO / "policies" / "agreements"), env=env)
    out = tmp_path / "export"
    printed = accord("policy", "export", "--out", str(out), env=env).stdout
    assert "1 obligations" in printed
    enforcer = casbin.Enforcer(str(out / "model.conf"), str(out / "policy.csv"))
    with (out / "obligations.csv").open(encoding="utf-8") as handle:
        obligations = {(row["source"], row["field"]): row["mask"] for row in csv.DictReader(handle)}

    asked = ("housing.riverton-homes", "nhs.riverton-hospital", "P-1")
    now = "2026-11-25T12:00:00Z"
    allowed, line = enforcer.enforce_ex(
        *asked, "contact.address", "direct-care.discharge", "070", "no", now
    )
    source = line[POLICY_TOKENS.index("source")]
    assert allowed and obligations[(source, "contact.address")] == "postcode-district"
    allowed, line = enforcer.enforce_ex(
        *asked, "identity.name", "direct-care.discharge", "070", "no", now
    )
    assert allowed and (line[POLICY_TOKENS.index("source")], "identity.name") not in obligations
