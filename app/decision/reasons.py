"""The reason codes a decision carries, and the kinds of lawful route a deny offers: one
enum each for the engine, the API and the audit.

Pure (no web or database imports), so the engine may use it. A StrEnum: each
code is its text, in JSON, in the audit table and in the hash chain alike.
"""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    """Why a decision is what it is (DESIGN.md, "Decision semantics")."""

    # permits
    AGREEMENT = "agreement"
    BREAK_GLASS = "break-glass"
    OBJECTION_OVERRIDDEN = "objection-overridden"  # second reason of break-glass over an objection
    # denies
    PERSON_RESTRICTION = "person-restriction"
    PERSON_INFO_UNAVAILABLE = "person-info-unavailable"
    NO_AGREEMENT = "no-agreement"
    AGREEMENT_NOT_IN_FORCE = "agreement-not-in-force"
    PURPOSE_NOT_COVERED = "purpose-not-covered"
    FIELD_NOT_COVERED = "field-not-covered"
    SUBJECT_CONDITION_NOT_MET = "subject-condition-not-met"
    CONSENT_REQUIRED = "consent-required"


class RouteKind(StrEnum):
    """A way a denied question could lawfully be permitted between the same parties."""

    CONSENT = "consent"
    BREAK_GLASS = "break-glass"
    AGREEMENT_NOT_IN_FORCE = "agreement-not-in-force"
    SUBJECT_CONDITION = "subject-condition"
