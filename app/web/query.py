"""Query parameters a route does not declare are refused, not ignored.

For an auditor, `?pending=false` or `?feild=health` silently ignored is a wrong
answer, not an empty one: every route (an app-wide dependency) answers 422 naming
each unknown parameter and the ones it takes.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.errors import InvalidParams


def _declared(dependant: Dependant) -> frozenset[str]:
    """The query names a route and its dependencies take (a model's fields by alias)."""
    names: set[str] = set()
    for param in dependant.query_params:
        model = param.field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names.update(info.alias or name for name, info in model.model_fields.items())
        else:
            names.add(param.alias)
    for dependency in dependant.dependencies:
        names |= _declared(dependency)
    return frozenset(names)


async def reject_unknown_query(request: Request) -> None:
    if not request.query_params:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    taken = _declared(route.dependant)  # a short walk, for requests with a query only
    unknown = sorted(set(request.query_params) - taken)
    if unknown:
        accepted = ", ".join(sorted(taken)) or "none"
        raise InvalidParams(
            [(name, f"is not a parameter of this route (it takes: {accepted})") for name in unknown]
        )
