"""A typed Python client for Accord's decision API, for partner systems.

    from accord_client import AccordClient, AccordError

See `accord_client._client` for what is retried and what every error means:
every `AccordError` is no decision, to be treated as a deny.
"""

from accord_client._client import (
    DEFAULT_TIMEOUT,
    AccordClient,
    AccordError,
    AccordUnreachable,
    AsyncAccordClient,
    BatchDecision,
    Decision,
    Forbidden,
    InvalidParam,
    InvalidRequest,
    NoAnswer,
    Obligation,
    Question,
    Reason,
    RequestTooLarge,
    Unauthenticated,
    Unavailable,
    UnexpectedAnswer,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "AccordClient",
    "AccordError",
    "AccordUnreachable",
    "AsyncAccordClient",
    "BatchDecision",
    "Decision",
    "Forbidden",
    "InvalidParam",
    "InvalidRequest",
    "NoAnswer",
    "Obligation",
    "Question",
    "Reason",
    "RequestTooLarge",
    "Unauthenticated",
    "Unavailable",
    "UnexpectedAnswer",
]
