"""Settings, read from ACCORD_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.types import MAX_BATCH_FIELDS

PROJECT_DIR = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACCORD_", extra="ignore", env_ignore_empty=True)

    database_url: str = Field(
        default=f"sqlite:///{PROJECT_DIR / 'var' / 'accord.db'}",
        description="SQLAlchemy URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
    )
    vocabulary_file: Path = Field(
        default=PROJECT_DIR / "policies" / "vocabulary.yaml",
        description="The partnership's vocabulary (agencies, purposes, fields)",
    )
    model_file: Path = Field(
        default=PROJECT_DIR / "policies" / "model.conf", description="The Casbin model"
    )
    host: str = Field(default="127.0.0.1", description="Address `accord serve` binds")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `accord serve` binds")
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port on which `accord serve` answers GET /metrics without a key, for every "
        "worker; unset: no metrics port",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address the metrics port binds (ACCORD_METRICS_PORT)"
    )
    require_metrics_scope: bool = Field(
        default=False,
        description="GET /metrics on the service's port needs a key with the `metrics` scope; "
        "otherwise any API key",
    )
    shutdown_grace_seconds: int = Field(
        default=20,
        ge=1,
        le=3600,
        description="On SIGTERM, how long in-flight requests may run before they are cancelled",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe log level written"
    )
    policy_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often a replica follows the policy, client and register feeds",
    )
    register_max_lag_seconds: float = Field(
        default=5,
        gt=0,
        le=300,
        description="Longest a replica answers on a register view it has not confirmed current; "
        "beyond it decisions are 503 and /readyz is not ready",
    )
    max_body_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Largest request body accepted (413 beyond)"
    )
    max_import_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Largest register import body (POST /v1/register/import; 413 beyond)",
    )
    max_batch_fields: int = Field(
        default=500,
        ge=1,
        le=MAX_BATCH_FIELDS,  # the request schema's cap on a list of fields
        description="Most fields one batch decision may ask for",
    )
    max_concurrent_simulations: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Simulations of a draft and access plans worked out at once, each in a "
        "thread off the event loop",
    )
    client_rate_per_second: float = Field(
        default=1000,
        gt=0,
        le=1_000_000,
        description="Requests per second one API client may make to one worker process, in "
        "bursts of up to one second's worth (at least one request); beyond it 429",
    )
    client_max_concurrent: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Requests one API client may have in flight at one worker process; "
        "beyond it 429",
    )
    audit_max_batch: int = Field(
        default=1000, ge=1, description="Most audit rows written in one group commit"
    )
    person_info_url: str | None = Field(
        default=None,
        pattern=r"^https?://.*\{person_id\}",
        description="Person-information service, e.g. http://host/persons/{person_id}; unset: none",
    )
    person_info_timeout_seconds: float = Field(
        default=2.0, gt=0, le=30, description="Longest wait for the person-information service"
    )
    person_info_cache_seconds: float = Field(
        default=60.0, ge=0, description="How long fetched person attributes are reused"
    )
    person_info_cache_size: int = Field(
        default=10_000, ge=1, description="Most persons whose attributes are cached"
    )
    break_glass_review_days: float = Field(
        default=7, gt=0, description="Days after which an unreviewed break-glass permit is overdue"
    )
    audit_retention_days: int = Field(
        default=6 * 365, ge=1, description="Audit rows younger than this are never purged"
    )
    audit_timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long a decision waits for its audit commit (503 after)"
    )
    audit_signing_key_file: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) that signs the audit chain head and checkpoints; "
        "made by `accord keys audit-signing create`, mounted as a secret",
    )
    audit_unsigned: bool = Field(
        default=False,
        description="Run without an audit signing key (development only: the head and "
        "checkpoints are then unsigned and a database writer can forge them)",
    )
    require_signoff: bool = Field(
        default=False,
        description="An agreement version becomes active only once a named signatory of every "
        "party agency has approved it; until then it is pending-approval and permits nothing",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
