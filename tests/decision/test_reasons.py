"""Reason codes are one enum: the engine decides with it, the OpenAPI document lists it."""

from __future__ import annotations

import re

from app.decision import engine
from app.decision.reasons import ReasonCode
from app.main import create_app
from tests.conftest import REPO

DESIGN_CODES = {
    "agreement",
    "break-glass",
    "objection-overridden",
    "person-restriction",
    "person-info-unavailable",
    "no-agreement",
    "agreement-not-in-force",
    "purpose-not-covered",
    "field-not-covered",
    "subject-condition-not-met",
    "consent-required",
}


def test_the_enum_lists_every_code_of_the_design() -> None:
    assert {code.value for code in ReasonCode} == DESIGN_CODES
    assert set(engine.DENY_STAGES) <= set(ReasonCode)


def test_every_code_the_engine_compares_with_is_in_the_enum() -> None:
    source = (REPO / "app" / "decision" / "engine.py").read_text(encoding="utf-8")
    compared = set(re.findall(r'reason == "([a-z-]+)"', source))
    assert compared and compared <= DESIGN_CODES


def test_the_openapi_document_lists_the_codes() -> None:
    schemas = create_app().openapi()["components"]["schemas"]
    enum = schemas["ReasonCode"]["enum"]
    assert set(enum) == DESIGN_CODES
    assert schemas["Reason"]["properties"]["code"]["$ref"].endswith("/ReasonCode")
    assert schemas["AuditDecisionOut"]["properties"]["reason"]["$ref"].endswith("/ReasonCode")
