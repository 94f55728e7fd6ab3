"""The baseline for bench/http.py: one FastAPI JSON endpoint doing no policy work and no I/O."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()


@app.post("/v1/decisions")
@app.post("/v1/decisions/batch")
async def echo(body: dict[str, Any]) -> dict[str, Any]:
    return {"decision": "permit", "fields": body.get("fields") or [body.get("field")]}
