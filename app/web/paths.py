"""A path parameter that may hold '/': `{name:rest}`, the rest of the path, whatever it holds.

Starlette's own `path` convertor is `.*`, which stops at a newline, and its route's `$`
matches before a final one: `/subject-access/P-1%0A` reached the route as `P-1`, and
`/subject-access/P%0A1` matched no route at all (404). `rest` takes every character, so the
parameter's own type judges it (422 naming the parameter). The OpenAPI path is unchanged.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor

REST = "rest"


class _Rest(Convertor[str]):
    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor(REST, _Rest())
