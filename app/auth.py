"""Who is calling. Every route takes the caller through `CurrentCaller`.

Authentication (API keys with scopes, bound to agencies) is issue 3; until
then every caller is the unauthenticated local client, which may act for any
agency. This one dependency is where keys will be checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from app.errors import Forbidden


@dataclass(frozen=True)
class Caller:
    client_id: str
    agencies: frozenset[str] | None  # None: may act for any agency

    def check_may_decide(self, *, requester: str, holder: str) -> None:
        if self.agencies is not None and not ({requester, holder} & self.agencies):
            raise Forbidden(f"client '{self.client_id}' acts for neither {requester} nor {holder}")


def current_caller() -> Caller:
    return Caller(client_id="local", agencies=None)


CurrentCaller = Annotated[Caller, Depends(current_caller)]
