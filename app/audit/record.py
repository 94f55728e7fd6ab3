"""What one audit row records about one decision: the one list of audit columns.

The writer inserts these, the hash chain covers them (after `seq` and the
chain format version, in this order; app/audit/chain.py), and the audit API
answers with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from typing_extensions import TypedDict  # pydantic validates only this one before 3.12


class RecordedObligation(TypedDict):
    """A condition the permit was given on: release `field` only after `mask`."""

    field: str
    mask: str


class AuditRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    decision_id: str
    request_id: str
    decided_at: datetime
    client: str
    requester: str
    holder: str
    person_id: str
    field: str
    purpose: str
    decision: Literal["permit", "deny"]
    reason: str
    agreement_id: str | None
    agreement_version: int | None
    restriction_id: str | None
    consent_id: str | None
    break_glass: bool
    justification: str | None
    user_ref: str | None
    case_ref: str | None
    policy_revision: int
    # The obligations of a permit ([] for none); None on rows of chain format 1,
    # written before obligations were recorded.
    obligations: list[RecordedObligation] | None
    # The kinds of lawful route a deny offered (consent, break-glass, ...; [] for none): a
    # route is not a disclosure, its offer is recorded. None on rows of chain format 1.
    routes_offered: list[str] | None


RECORDED_COLUMNS = tuple(AuditRecord.model_fields)
# One row as the audit writer takes it: AuditRecord's fields by name. The decision path
# builds these directly (app/decision/service.py); others may pass `record.model_dump()`.
AuditRow = Mapping[str, Any]
