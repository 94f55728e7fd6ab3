"""The audit hash chain (pure): each row's hash covers its content and the previous row's hash.

Rows are chained in commit order: the writer takes the chain head under a
lock, numbers and hashes its batch after it, and moves the head, all in the
transaction that inserts the rows. Changing, removing or reordering any row
breaks the chain at that row, and removing rows at the end leaves the head
pointing past the last row.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from app.audit.record import RECORDED_COLUMNS

GENESIS = "0" * 64

# The columns a row's hash covers, in order, by chain format version (the row's
# `chain_version`). A new recorded column is a new version; the old ones stay, so rows
# written before it still verify.
CHAINED_COLUMNS: dict[int, tuple[str, ...]] = {
    1: (
        "seq",
        "decision_id",
        "request_id",
        "decided_at",
        "client",
        "requester",
        "holder",
        "person_id",
        "field",
        "purpose",
        "decision",
        "reason",
        "agreement_id",
        "agreement_version",
        "restriction_id",
        "consent_id",
        "break_glass",
        "justification",
        "user_ref",
        "case_ref",
        "policy_revision",
    ),
    2: ("seq", "chain_version", *RECORDED_COLUMNS),  # + obligations, routes_offered
}
CHAIN_VERSION = max(CHAINED_COLUMNS)  # the version new rows are written in
_chained_values = {
    version: operator.itemgetter(*columns) for version, columns in CHAINED_COLUMNS.items()
}


def _canonical_datetime(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    raise TypeError(f"{type(value).__name__} is not chained")


def row_hash(previous_hash: str, row: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash and the row's chained columns (as a JSON array, its
    mappings' keys sorted) for the row's chain format version."""
    content = orjson.dumps(
        _chained_values[row["chain_version"]](row),
        default=_canonical_datetime,  # orjson hands over datetimes only, with this option
        option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(previous_hash.encode() + content).hexdigest()


def chain_rows(
    rows: list[dict[str, Any]], *, after_seq: int, after_hash: str
) -> list[dict[str, Any]]:
    """Number and hash `rows` to follow the row (`after_seq`, `after_hash`)."""
    previous = after_hash
    for offset, row in enumerate(rows, start=1):
        row["seq"] = after_seq + offset
        row["chain_version"] = CHAIN_VERSION
        row["prev_hash"] = previous
        row["row_hash"] = previous = row_hash(previous, row)
    return rows


@dataclass(frozen=True)
class ChainStart:
    """Where verification starts: the genesis, or the checkpoint of the last purge."""

    seq: int  # the seq of the last row before the chain's first remaining row
    hash: str


@dataclass(frozen=True)
class ChainHead:
    """The newest row's seq and hash, as the database holds it or as a witness saved it,
    with the signature that vouches for it (None where unsigned)."""

    seq: int
    hash: str
    signature: str | None = None

    def statement(self) -> bytes:
        """What the signature covers."""
        return f"accord audit head v1 {self.seq} {self.hash}".encode()


@dataclass(frozen=True)
class Checkpoint:
    """A purge's record that it removed `rows_removed` rows, up to row `last_seq`, whose
    hash `last_hash` commits to every row before it."""

    id: int
    last_seq: int
    last_hash: str
    rows_removed: int
    purged_before: datetime
    created_at: datetime
    created_by: str
    signature: str | None = None

    def statement(self) -> bytes:
        """What the signature covers: every column but the id and the signature."""
        content = orjson.dumps(
            [
                self.last_seq,
                self.last_hash,
                self.rows_removed,
                self.purged_before,
                self.created_at,
                self.created_by,
            ],
            default=_canonical_datetime,
            option=orjson.OPT_PASSTHROUGH_DATETIME,
        )
        return b"accord audit checkpoint v1 " + content


@dataclass(frozen=True)
class VerifiedUpTo:
    """A successful verification's record that the chain was proven from its start (or a
    signed checkpoint) up to row `last_seq`, whose hash `last_hash` commits to every row
    before it; `accord audit verify --since-checkpoint` starts from the newest."""

    id: int
    last_seq: int
    last_hash: str
    rows_checked: int
    verified_at: datetime
    verified_by: str
    signature: str | None = None

    def statement(self) -> bytes:
        """What the signature covers: every column but the id and the signature."""
        content = orjson.dumps(
            [self.last_seq, self.last_hash, self.rows_checked, self.verified_at, self.verified_by],
            default=_canonical_datetime,
            option=orjson.OPT_PASSTHROUGH_DATETIME,
        )
        return b"accord audit verified v1 " + content


# Why a signature does not prove a statement (None when it does): KeyRing.problem.
SignatureCheck = Callable[[bytes, str | None], str | None]


@dataclass(frozen=True)
class BrokenLink:
    seq: int
    decision_id: str | None
    problem: str


def chain_start(
    checkpoints: Iterable[Checkpoint], check: SignatureCheck | None
) -> ChainStart | BrokenLink:
    """Where the remaining rows start: after the newest checkpoint, once every checkpoint,
    oldest first, is proven. Each must be signed (when `check` is given) and must have
    removed exactly the rows after the checkpoint before it, so a checkpoint that was
    forged, changed or removed is a broken link rather than a new place to start."""
    start = ChainStart(0, GENESIS)
    for checkpoint in checkpoints:
        problem = None if check is None else check(checkpoint.statement(), checkpoint.signature)
        if problem is not None:
            return BrokenLink(
                checkpoint.last_seq,
                None,
                f"the checkpoint of a purge up to row {checkpoint.last_seq} {problem}: "
                "it cannot vouch for the rows it says it removed",
            )
        if checkpoint.rows_removed != checkpoint.last_seq - start.seq:
            return BrokenLink(
                start.seq + 1,
                None,
                f"the checkpoint of a purge up to row {checkpoint.last_seq} records "
                f"{checkpoint.rows_removed} rows removed, but follows row {start.seq}: "
                "a checkpoint is missing or was changed",
            )
        start = ChainStart(checkpoint.last_seq, checkpoint.last_hash)
    return start


@dataclass(frozen=True)
class Verification:
    rows_checked: int
    last_seq: int
    broken: BrokenLink | None
    signed_by: tuple[str, ...] = ()  # the key ids signatures were checked with; () if not
    start_seq: int = 0  # the rows checked are those after this one (a checkpoint's)
    last_hash: str | None = None  # the hash of row last_seq, once the chain is proven

    @property
    def intact(self) -> bool:
        return self.broken is None


def _format_problem(row: Mapping[str, Any], previous_version: int) -> str | None:
    """Why the row's chain format cannot be right: unknown, older than the row before it
    (formats only move forward), or format 1 holding columns its hash would not cover."""
    version = row["chain_version"]
    if version not in CHAINED_COLUMNS:
        return f"its chain format version {version} is unknown"
    if version < previous_version:
        return f"its chain format version {version} is older than the row before it"
    if version == 1 and (row["obligations"] is not None or row["routes_offered"] is not None):
        return "it holds values that its chain format version 1 does not cover"
    return None


def verify_rows(
    rows: Iterable[Mapping[str, Any]], *, start: ChainStart, head_seq: int, head_hash: str
) -> Verification:
    """Walk rows in seq order from `start`; stop at the first broken link."""
    expected_seq, previous, checked, version = start.seq + 1, start.hash, 0, 1
    for row in rows:
        seq, decision_id = int(row["seq"]), str(row["decision_id"])
        format_problem = _format_problem(row, version)
        if format_problem is not None:
            return Verification(checked, seq - 1, BrokenLink(seq, decision_id, format_problem))
        version = row["chain_version"]
        if seq != expected_seq:
            if seq > expected_seq:  # name the first missing row
                missing = f"rows {expected_seq} to {seq - 1} are missing"
                broken = BrokenLink(expected_seq, None, missing)
            else:
                broken = BrokenLink(seq, decision_id, f"row {seq} is out of order")
            return Verification(checked, expected_seq - 1, broken)
        if row["prev_hash"] != previous:
            return Verification(
                checked, seq - 1, BrokenLink(seq, decision_id, "does not follow the row before it")
            )
        if row_hash(previous, row) != row["row_hash"]:
            return Verification(
                checked, seq - 1, BrokenLink(seq, decision_id, "its content was changed")
            )
        previous, expected_seq, checked = row["row_hash"], seq + 1, checked + 1
    last_seq = expected_seq - 1
    if last_seq != head_seq or previous != head_hash:
        problem = (
            f"the chain ends at row {last_seq} but its head records row {head_seq}: "
            "rows at the end were removed"
            if last_seq < head_seq
            else f"the chain ends at row {last_seq}, past its recorded head {head_seq}"
        )
        return Verification(checked, last_seq, BrokenLink(last_seq + 1, None, problem))
    return Verification(checked, last_seq, None)
