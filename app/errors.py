"""Domain errors raised by services; app/problems.py turns them into problem+json."""

from __future__ import annotations


class InvalidRequest(ValueError):
    """The request names something that does not exist or breaks a rule (422)."""

    def __init__(self, location: str, message: str) -> None:
        self.location = location
        self.message = message
        super().__init__(f"{location}: {message}")


class NotFound(LookupError):
    """The named record does not exist (404)."""


class Conflict(ValueError):
    """The record exists already or is in the wrong state (409)."""


class PolicyUnavailable(RuntimeError):
    """No compiled policy is loaded, so nothing can be decided (503)."""


class Forbidden(PermissionError):
    """The caller may not act for the agencies named in the request (403)."""
