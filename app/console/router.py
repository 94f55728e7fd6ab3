"""The auditor console: server-rendered pages over the audit API's own functions.

A browser cannot send a bearer header, so the console signs in with an API key
(scope `audit`) kept in an HttpOnly, SameSite=Strict cookie scoped to /console.
Each page calls what the API's route calls, often the route function itself; an
error it raises (a 422 naming a bad filter, a 404, a 409) is the problem the API
would answer, shown as a page with its status.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from app.agreements.service import version_history
from app.audit import queries, reviews
from app.audit import router as audit_api
from app.console.access_map_svg import access_map_svg
from app.console.chart import decisions_per_day
from app.console.views import ConsoleFilters, Names, filter_options, lawful_bases, waited
from app.policy.access_map import access_map
from app.policy.vocabulary import FIELD_CLASSES, FieldClass
from app.register.service import list_entries
from app.runtime.callers import Caller, key_digest
from app.types import PersonId
from app.web.deps import AppSettings, DbSession, Live, Now

COOKIE = "accord_console_key"
CHART_DAYS = 30
PAGE_SIZE = 50
QUEUE_LIMIT = 1000  # the most break-glass permits one tab lists (the API's largest page)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["waited"] = waited


class SignInNeeded(Exception):
    """No auditor is signed in to the console."""


def _page(
    request: Request, template: str, caller: Caller | None, status: int = 200, **context: Any
) -> Response:
    return templates.TemplateResponse(
        request, template, {"caller": caller, **context}, status_code=status
    )


class ConsoleRoute(APIRoute):
    """A console route: with no auditor signed in, the sign-in page; an error the app
    answers with problem+json, that problem as a page with its status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handle(request)
            except SignInNeeded:
                return RedirectResponse("/console/login", status_code=303)
            except Exception as exc:
                handlers = request.app.exception_handlers
                handler = next((handlers[k] for k in type(exc).__mro__ if k in handlers), None)
                if handler is None:
                    raise
                answer = handler(request, exc)
                problem = await answer if inspect.isawaitable(answer) else answer
                return _page(
                    request,
                    "problem.html",
                    getattr(request.state, "auditor", None),
                    problem.status_code,
                    problem=orjson.loads(problem.body),
                )

        return page


router = APIRouter(prefix="/console", include_in_schema=False, route_class=ConsoleRoute)


async def _auditor(request: Request, live: Live) -> Caller:
    key = request.cookies.get(COOKIE)
    caller = live.callers.get(key_digest(key)) if key else None
    if caller is None or "audit" not in caller.scopes:
        raise SignInNeeded
    request.state.auditor = caller  # for an error page's navigation
    return caller


async def _names(live: Live) -> Names:
    return Names(live.current.vocabulary)


async def _filter(live: Live, filters: Annotated[ConsoleFilters, Query()]) -> queries.AuditFilter:
    return audit_api.audit_filter(live, filters)


SignedIn = Annotated[Caller, Depends(_auditor)]
DisplayNames = Annotated[Names, Depends(_names)]
Filter = Annotated[queries.AuditFilter, Depends(_filter)]


@router.get("/login")
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
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("")
def search(
    request: Request,
    session: DbSession,
    live: Live,
    caller: SignedIn,
    names: DisplayNames,
    now: Now,
    where: Filter,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Decisions matching the filters, a page at a time, how many match, and a chart."""
    page = audit_api.search_decisions(session, caller, where, limit=PAGE_SIZE, cursor=cursor)
    since = datetime.combine(now.date() - timedelta(days=CHART_DAYS - 1), time(), UTC)
    chart = decisions_per_day(
        queries.daily_counts(session, where=where, since=since),
        last_day=now.date(),
        days=CHART_DAYS,
    )
    given = [(k, v) for k, v in request.query_params.multi_items() if v and k != "cursor"]
    return _page(
        request,
        "search.html",
        caller,
        names=names,
        given=dict(given),
        page=page,
        total=queries.count_decisions(session, where=where),
        links={
            "first": f"?{urlencode(given)}" if cursor else None,
            "next": f"?{urlencode([*given, ('cursor', page.next_cursor)])}"
            if page.next_cursor
            else None,
            "csv": f"/console/export?{urlencode([*given, ('format', 'csv')])}",
            "ndjson": f"/console/export?{urlencode([*given, ('format', 'ndjson')])}",
        },
        options=filter_options(names, live.current.agreements.values()),
        chart=chart,
        days=CHART_DAYS,
    )


@router.get("/export")
def export(
    request: Request,
    caller: SignedIn,
    where: Filter,
    format: Annotated[Literal["csv", "ndjson"], Query()] = "ndjson",
) -> StreamingResponse:
    """The API's export of every decision the search's filters match."""
    return audit_api.export_decisions(request, caller, where, format)


@router.get("/decisions/{decision_id}")
def decision(
    request: Request,
    session: DbSession,
    caller: SignedIn,
    names: DisplayNames,
    decision_id: audit_api.DecisionId,
    verify: bool = False,
) -> Response:
    """One decision's full record, its place in the chain and, asked, whether it verifies."""
    return _page(
        request,
        "decision.html",
        caller,
        names=names,
        row=audit_api.get_decision(session, caller, decision_id),
        reviews=reviews.reviews_of(session, [decision_id])[decision_id],
        verification=audit_api.verify(request, caller) if verify else None,
    )


@router.get("/break-glass")
def break_glass(
    request: Request,
    session: DbSession,
    caller: SignedIn,
    names: DisplayNames,
    settings: AppSettings,
    now: Now,
    tab: Annotated[Literal["pending", "overdue", "reviewed"], Query()] = "pending",
) -> Response:
    """Break-glass permits awaiting review (or overdue), or reviewed with their reviews."""
    status: reviews.QueueStatus = "reviewed" if tab == "reviewed" else "pending"
    entries = audit_api.break_glass_queue(
        session, caller, settings, now, status=status, limit=QUEUE_LIMIT
    )
    pending, overdue = reviews.queue_counts(
        session.connection(),
        overdue_after=timedelta(days=settings.break_glass_review_days),
        now=now,
    )
    return _page(
        request,
        "break_glass.html",
        caller,
        names=names,
        tab=tab,
        entries=[entry for entry in entries if entry.overdue or tab != "overdue"],
        counts={"pending": pending, "overdue": overdue},
        limit=QUEUE_LIMIT,
        overdue_days=settings.break_glass_review_days,
        now=now,
    )


@router.post("/break-glass/{decision_id}")
def review(
    session: DbSession,
    caller: SignedIn,
    now: Now,
    decision_id: audit_api.DecisionId,
    body: Annotated[audit_api.ReviewIn, Form()],
) -> Response:
    """Record a named reviewer's outcome, as the API does; then show it among the reviewed."""
    audit_api.review_break_glass(body, session, caller, decision_id, now)
    return RedirectResponse(
        f"/console/break-glass?tab=reviewed#review-{decision_id}", status_code=303
    )


@router.get("/subject-access")
def subject_access(
    request: Request,
    session: DbSession,
    caller: SignedIn,
    names: DisplayNames,
    person: Annotated[PersonId | None, Query()] = None,
) -> Response:
    """The subject-access report: what was permitted to whom, why, and under which
    agreement and lawful basis; the person's register entries; break-glass and reviews."""
    if person is None:
        return _page(request, "subject_access.html", caller, report=None)
    report = audit_api.subject_access(request, caller, person)
    emergencies = [item for group in report.groups for item in group.items if item.break_glass]
    return _page(
        request,
        "subject_access.html",
        caller,
        names=names,
        report=report,
        bases=lawful_bases(session, report, names.vocabulary),
        register=list_entries(session, person_id=person, include_removed=True),
        emergencies=emergencies,
        reviews=reviews.reviews_of(session, [item.decision_id for item in emergencies]),
        now=report.generated_at,
    )


@router.get("/agreements")
def agreements(
    request: Request,
    session: DbSession,
    live: Live,
    caller: SignedIn,
    names: DisplayNames,
    now: Now,
) -> Response:
    """Every agreement as the live policy holds it, with its versions: who made each, when."""
    current = sorted(live.current.agreements.values(), key=lambda agreement: agreement.id)
    return _page(
        request,
        "agreements.html",
        caller,
        names=names,
        agreements=current,
        history={agreement.id: version_history(session, agreement.id) for agreement in current},
        revision=live.current.revision,
        today=now.date(),
    )


@router.get("/access-map")
def access_map_page(
    request: Request,
    live: Live,
    caller: SignedIn,
    names: DisplayNames,
    now: Now,
    agency: Annotated[str, Query(max_length=128)] = "",
    purpose: Annotated[str, Query(max_length=128)] = "",
    data_class: Annotated[FieldClass | Literal[""], Query()] = "",
) -> Response:
    """Which agency may see which classes of whose data, by which agreement in force today,
    for which purposes: the picture, and the same flows as a table (the API's map)."""
    flows = access_map(
        live.current,
        now.date(),
        agency=agency or None,
        purpose=purpose or None,
        data_class=data_class or None,
    )
    flows.sort(key=lambda f: (names.agency(f.holder), names.agency(f.requester), f.agreement_id))
    options = filter_options(names, ())
    return _page(
        request,
        "access_map.html",
        caller,
        names=names,
        flows=flows,
        picture=access_map_svg(flows, names, chosen=agency or None) if flows else None,
        given={"agency": agency, "purpose": purpose, "data_class": data_class},
        options={
            "agency": options["holder"],
            "purpose": options["purpose"],
            "data_class": [(kind, kind) for kind in FIELD_CLASSES],
        },
        today=now.date(),
    )
