"""The auditor console: server-rendered pages over the same services as the audit API.

A browser cannot send a bearer header, so the console signs in with an API key
(scope `audit`) kept in an HttpOnly, SameSite=Strict cookie scoped to /console.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import TypeAdapter, ValidationError

from app.audit import queries, reviews
from app.audit.router import AuditFilterParams, build_subject_access
from app.console.chart import decisions_per_day
from app.errors import Conflict, NotFound
from app.runtime.callers import Caller, key_digest
from app.types import LongText, PersonId, PersonName
from app.web.deps import AppSettings, DbSession, Live, Now

PERSON_ID: TypeAdapter[str] = TypeAdapter(PersonId)

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
COOKIE = "accord_console_key"
CHART_DAYS = 30
FILTER_NAMES = ("person", "requester", "holder", "purpose", "field", "user", "case_ref", "decision")


def _auditor(request: Request, live: Live) -> Caller | None:
    key = request.cookies.get(COOKIE)
    caller = live.callers.get(key_digest(key)) if key else None
    return caller if caller is not None and "audit" in caller.scopes else None


def _page(request: Request, template: str, caller: Caller | None, **context: Any) -> Response:
    return templates.TemplateResponse(request, template, {"caller": caller, **context})


def _to_login() -> Response:
    return RedirectResponse("/console/login", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return _page(request, "login.html", None)


@router.post("/login")
def login(request: Request, live: Live, key: Annotated[str, Form(max_length=200)]) -> Response:
    caller = live.callers.get(key_digest(key))
    if caller is None or "audit" not in caller.scopes:
        return _page(request, "login.html", None, error="That key is unknown or lacks `audit`.")
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        httponly=True,
        samesite="strict",
        path="/console",
        secure=request.url.scheme == "https",
        max_age=8 * 3600,
    )
    return response


@router.post("/logout")
def logout() -> Response:
    response = _to_login()
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("", response_class=HTMLResponse)
def search(request: Request, session: DbSession, live: Live) -> Response:
    caller = _auditor(request, live)
    if caller is None:
        return _to_login()
    given = {name: request.query_params.get(name, "").strip() for name in FILTER_NAMES}
    try:
        params = AuditFilterParams.model_validate({k: v for k, v in given.items() if v})
        where = params.to_filter(live.current.vocabulary)
    except ValidationError as exc:
        return _page(
            request,
            "search.html",
            caller,
            filters=given,
            rows=[],
            chart="",
            days=CHART_DAYS,
            error=str(exc),
        )
    rows, _ = queries.search_decisions(session, where=where, limit=100, cursor=None)
    today = datetime.now(UTC).date()
    since = datetime.combine(today - timedelta(days=CHART_DAYS - 1), datetime.min.time(), UTC)
    chart = decisions_per_day(
        queries.daily_counts(session, where=where, since=since), last_day=today, days=CHART_DAYS
    )
    return _page(
        request, "search.html", caller, filters=given, rows=rows, chart=chart, days=CHART_DAYS
    )


@router.get("/break-glass", response_class=HTMLResponse)
def break_glass(
    request: Request, session: DbSession, live: Live, settings: AppSettings, now: Now
) -> Response:
    caller = _auditor(request, live)
    if caller is None:
        return _to_login()
    entries = reviews.review_queue(
        session,
        pending_only=True,
        overdue_after=timedelta(days=settings.break_glass_review_days),
        limit=500,
        now=now,
    )
    return _page(
        request,
        "break_glass.html",
        caller,
        entries=entries,
        overdue_days=settings.break_glass_review_days,
    )


@router.post("/break-glass/{decision_id}")
def review(
    request: Request,
    session: DbSession,
    live: Live,
    now: Now,
    decision_id: str,
    outcome: Annotated[reviews.Outcome, Form()],
    note: Annotated[LongText, Form()],
    reviewer: Annotated[PersonName, Form()],
) -> Response:
    caller = _auditor(request, live)
    if caller is None:
        return _to_login()
    try:
        reviews.record_review(
            session,
            decision_id=decision_id,
            outcome=outcome,
            note=note,
            reviewer=reviewer,
            client=caller.client_id,
            now=now,
        )
        session.commit()
    except (NotFound, Conflict):
        session.rollback()
    return RedirectResponse("/console/break-glass", status_code=303)


@router.get("/subject-access", response_class=HTMLResponse)
def subject_access(request: Request, live: Live, person: str | None = None) -> Response:
    caller = _auditor(request, live)
    if caller is None:
        return _to_login()
    asked = (person or "").strip()
    if not asked:
        return _page(request, "subject_access.html", caller, report=None, person=person)
    try:
        person_id = PERSON_ID.validate_python(asked)
    except ValidationError as exc:
        error = f"Not a person id: {exc.errors()[0]['msg']}"
        return _page(
            request, "subject_access.html", caller, report=None, person=person, error=error
        )
    report = build_subject_access(request, person_id)
    return _page(request, "subject_access.html", caller, report=report, person=person)
