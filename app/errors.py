"""Domain errors raised by services; app/web/problems.py turns them into problem+json."""

from __future__ import annotations


class Unprocessable(ValueError):
    """Input refused with each bad part named (422)."""

    title = "Invalid request"

    def invalid_params(self) -> list[tuple[str, str]]:
        """(place, reason) for each bad part."""
        raise NotImplementedError


class InvalidRequest(Unprocessable):
    """The request names something that does not exist or breaks a rule (422)."""

    def __init__(self, location: str, message: str) -> None:
        self.location = location
        self.message = message
        super().__init__(f"{location}: {message}")

    def invalid_params(self) -> list[tuple[str, str]]:
        return [(self.location, self.message)]


class InvalidParams(Unprocessable):
    """Several bad parts, all named at once (422); past `shown`, the rest are counted."""

    def __init__(self, problems: list[tuple[str, str]], *, more: int = 0, detail: str = "") -> None:
        self.problems = problems
        self.more = more
        self.detail = detail
        listed = "; ".join(f"{place}: {reason}" for place, reason in problems[:5])
        rest = len(problems) + more - min(len(problems), 5)
        if rest:
            listed += f"; and {rest} more"
        super().__init__(f"{detail}: {listed}" if detail else listed)

    def invalid_params(self) -> list[tuple[str, str]]:
        rest = [("more", f"{self.more} more problems not listed")] if self.more else []
        return [*self.problems, *rest]


class NotFound(LookupError):
    """The named record does not exist (404)."""


class Conflict(ValueError):
    """The record exists already or is in the wrong state (409)."""


class UnsupportedMediaType(ValueError):
    """The body is in a format the route does not read (415)."""


class Unavailable(RuntimeError):
    """Something a decision needs cannot be had: nothing is decided (503)."""

    title = "Unavailable"


class PolicyUnavailable(Unavailable):
    """No compiled policy is loaded, so nothing can be decided (503)."""

    title = "Policy unavailable"


class AuditUnavailable(Unavailable):
    """The audit rows could not be committed, so the decision must not be given (503)."""

    title = "Audit unavailable: no decision was made"


class Forbidden(PermissionError):
    """The caller may not act for the agencies named in the request (403)."""
