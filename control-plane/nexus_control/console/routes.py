"""The console's HTTP edge: pages, sign-in, and buttons that are the API's own route calls.

Who sees a page or a button is read from the API route it stands for (its
``require`` dependency, the roles ``/openapi.json`` lists as ``x-nexus-roles``),
never from a table of its own. A button calls that route's function with the
session's principal, so it does what the API does, audited the same way.

Every answer carries a strict Content-Security-Policy (scripts and styles
from ``/console`` only, no inline script), ``no-store`` and ``nosniff``. A
state-changing form needs a live session, the session's CSRF token and, when
the browser sends one, an Origin of this host; otherwise it is refused with
a page saying why, and nothing is changed.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import secrets
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from nexus_audit.api import decisions as decisions_api
from nexus_audit.api import routes as audit_api
from nexus_audit.catalog import UnknownControlError
from nexus_audit.coverage import UnknownFrameworkError, framework_of
from nexus_audit.payloads import PayloadStatus
from nexus_audit.search import DecisionQuery, EvidenceCounts, InvalidQueryError, parse_query
from nexus_audit.service import AuditLog
from nexus_contract.errors import NexusError
from nexus_control.access.tokens import Principal
from nexus_control.api import budgets as budgets_api
from nexus_control.api import fleet as fleet_api
from nexus_control.api import rollouts as rollouts_api
from nexus_control.api.deps import route_roles
from nexus_control.api.models import ApprovalRequest, GateOverride, Promotion, Reason
from nexus_control.console import pages, rollout_diff, sessions
from nexus_control.plane import ControlPlane
from nexus_control.rollout.states import RolloutState
from nexus_runtime.http import ApiError, ErrorTable, read_body

__all__ = [
    "CONSOLE_PREFIX",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "assets_dir",
    "router",
]

CONSOLE_PREFIX = "/console"
SESSION_COOKIE = "nexus_console"
LOGIN_COOKIE = "nexus_console_login"
MAX_FORM_BYTES = 16 * 1024
TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}
ASSET_FILES = {"chart.umd.min.js": "chart.js/dist/chart.umd.min.js"}
"""Browser libraries served from the npm assets bootstrap installs (name → path in node_modules)."""
FLEET_PAGE = 200
BUDGET_ROWS = 50
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)
templates = Jinja2Templates(directory=str(TEMPLATES))

_P = ParamSpec("_P")


def assets_dir(configured: Path | None) -> Path:
    """Where the npm assets are: the setting, else what bootstrap linked beside the venv."""
    return configured or Path(sys.prefix) / "share" / "nexus-console-assets"


# --- who may see what: read from the API routes themselves ---------------------------

NAV: tuple[tuple[str, str, Callable[..., Any]], ...] = (
    ("Controls", "/controls", audit_api.coverage_report),
    ("Decisions", "/decisions", decisions_api.search),
    ("Rollouts", "/rollouts", rollouts_api.list_rollouts),
    ("Fleet", "/fleet", fleet_api.get_fleet),
    ("Budgets", "/budgets", budgets_api.get_budgets),
    ("Log health", "/log", audit_api.checkpoint),
)
"""Each page, and the API route whose roles admit it."""

ACTIONS: Mapping[str, Callable[..., Any]] = {
    "approve": rollouts_api.approve,
    "override": rollouts_api.override,
    "promote": rollouts_api.promote,
    "pause": rollouts_api.pause,
    "resume": rollouts_api.resume,
    "rollback": rollouts_api.rollback,
}
REASON_TAKEN = {"approve", "override", "pause", "rollback"}
"""Actions whose API call carries the reason (approve's is its comment)."""


def roles_of(app: FastAPI, endpoint: Callable[..., Any]) -> frozenset[str]:
    """The roles the API route served by ``endpoint`` admits (empty when it is not mounted)."""
    cache: dict[Callable[..., Any], frozenset[str]] = app.state.console_roles
    if endpoint not in cache:
        found: frozenset[str] = frozenset()
        api_routers: list[APIRouter] = app.state.console_api_routers
        for api_router in api_routers:
            for route in api_router.routes:
                if isinstance(route, APIRoute) and route.endpoint is endpoint:
                    found = route_roles(route.dependant) or frozenset()
        cache[endpoint] = found
    return cache[endpoint]


@dataclass(frozen=True)
class Viewer:
    """The signed-in principal, its session cookie, and what it may see."""

    principal: Principal
    cookie: str
    app: FastAPI

    @property
    def csrf(self) -> str:
        return sessions.csrf_token(self.cookie)

    def may(self, endpoint: Callable[..., Any]) -> bool:
        return self.principal.role.value in roles_of(self.app, endpoint)

    @property
    def nav(self) -> list[tuple[str, str]]:
        return [(label, CONSOLE_PREFIX + path) for label, path, e in NAV if self.may(e)]


class Refusal(Exception):  # noqa: N818 - an answer, not a failure of ours
    """Answer a page with ``status`` and ``message``; nothing was changed."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def _plane(request: Request) -> ControlPlane:
    plane: ControlPlane = request.app.state.control_plane
    return plane


def _audit(request: Request) -> AuditLog:
    audit: AuditLog | None = getattr(request.app.state, "audit_log", None)
    if audit is None:
        raise Refusal(404, "No audit log here", "the audit service runs apart from this plane")
    return audit


def _now() -> datetime:
    return datetime.now(UTC)


async def _viewer(request: Request) -> Viewer:
    plane = _plane(request)
    cookie = request.cookies.get(SESSION_COOKIE)

    def resume() -> Principal:
        with plane.db.session() as session:
            return sessions.resume_session(
                session, cookie, idle_s=plane.settings.console_idle_s, now=_now()
            )

    principal = await asyncio.to_thread(resume)
    assert cookie is not None
    return Viewer(principal, cookie, request.app)


def _require(viewer: Viewer, endpoint: Callable[..., Any], what: str) -> None:
    if not viewer.may(endpoint):
        roles = ", ".join(sorted(roles_of(viewer.app, endpoint))) or "no role here"
        raise Refusal(
            403,
            "Not for your role",
            f"role {viewer.principal.role.value} may not {what} ({roles} may)",
        )


def _headers(response: Response) -> Response:
    response.headers["content-security-policy"] = CSP
    response.headers["cache-control"] = "no-store"
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "same-origin"
    response.headers["x-frame-options"] = "DENY"
    return response


def _render(
    request: Request,
    name: str,
    viewer: Viewer | None,
    code: int = 200,
    **context: Any,
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        name,
        {"viewer": viewer, "prefix": CONSOLE_PREFIX, "now": _now(), **context},
        status_code=code,
    )
    _headers(response)
    return response


def _error_table(request: Request) -> ErrorTable:
    table: ErrorTable = request.app.state.console_error_table
    return table


def _status_of(request: Request, exc: NexusError) -> int:
    table = _error_table(request)
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls][0]
    return 500


def page(
    handler: Callable[_P, Awaitable[Response]],
) -> Callable[_P, Awaitable[Response]]:
    """Answer a handler's refusals as pages: sign-in, CSRF, role, bad input, domain errors."""

    @functools.wraps(handler)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Response:
        request = kwargs.get("request")
        assert isinstance(request, Request)
        try:
            return await handler(*args, **kwargs)
        except sessions.SessionEndedError as exc:
            if request.method == "GET":
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = RedirectResponse(
                    f"{CONSOLE_PREFIX}/login?next={quote(target)}&why={quote(str(exc))}", 303
                )
                return _headers(response)
            return _render(request, "refused.html", None, 401, title="Signed out", message=str(exc))
        except sessions.CsrfError as exc:
            return _render(request, "refused.html", None, 403, title="Refused", message=str(exc))
        except Refusal as exc:
            return _render(
                request, "refused.html", None, exc.status, title=exc.title, message=exc.message
            )
        except ApiError as exc:
            return _render(
                request, "refused.html", None, exc.status, title="Refused", message=exc.message
            )
        except (InvalidQueryError, UnknownControlError, UnknownFrameworkError) as exc:
            return _render(
                request, "refused.html", None, 400, title="Bad request", message=str(exc)
            )
        except NexusError as exc:
            status = _status_of(request, exc)
            if status >= 500:
                raise
            return _render(request, "refused.html", None, status, title="Refused", message=str(exc))

    return wrapper


async def _form(request: Request, viewer: Viewer | None) -> dict[str, str]:
    """The form's fields, after the same-origin and (with a session) CSRF checks."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise Refusal(403, "Refused", "the form was sent from another site; nothing changed")
    body = await read_body(request, MAX_FORM_BYTES)
    try:
        parsed = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Refusal(400, "Bad request", "the form is not UTF-8") from None
    fields = {name: values[-1] for name, values in parsed.items()}
    if viewer is not None:
        sessions.check_csrf(viewer.cookie, fields.get(sessions.CSRF_FIELD))
    return fields


def _secure(request: Request) -> bool:
    configured = _plane(request).settings.console_secure_cookie
    return request.url.scheme == "https" if configured is None else configured


def _local(target: str | None) -> str:
    """A redirect target inside the console, else the console's home."""
    if (
        target
        and target.startswith(CONSOLE_PREFIX + "/")
        and "//" not in target
        and "\\" not in target
    ):
        return target
    return CONSOLE_PREFIX + "/"


# --- sign-in ------------------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request, next: str | None = None, why: str | None = None) -> Response:
    """The sign-in form; a random value in a cookie and the form guards the sign-in itself."""
    nonce = secrets.token_urlsafe(24)
    response = _render(
        request, "login.html", None, nonce=nonce, next=_local(next), why=(why or "")[:200]
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=600,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path=f"{CONSOLE_PREFIX}/login",
    )
    return response


@router.post("/login")
@page
async def login(request: Request) -> Response:
    """Exchange a role token for a session cookie (HttpOnly, SameSite=Strict, Secure on TLS)."""
    fields = await _form(request, None)
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not nonce or not secrets.compare_digest(nonce, fields.get("nonce", "")):
        raise Refusal(403, "Refused", "the sign-in form expired or came from elsewhere: reload it")
    plane = _plane(request)

    def open_() -> sessions.OpenedSession:
        with plane.db.session() as session:
            return sessions.open_session(
                session,
                fields.get("token", ""),
                ttl_s=plane.settings.console_session_ttl_s,
                now=_now(),
            )

    try:
        opened = await asyncio.to_thread(open_)
    except sessions.SignInError as exc:
        return _render(
            request, "login.html", None, 401, nonce=nonce, next=_local(fields.get("next")),
            why=str(exc),
        )  # fmt: skip
    response = _headers(RedirectResponse(_local(fields.get("next")), 303))
    response.set_cookie(
        SESSION_COOKIE,
        opened.cookie,
        max_age=plane.settings.console_session_ttl_s,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path=CONSOLE_PREFIX,
    )
    response.delete_cookie(LOGIN_COOKIE, path=f"{CONSOLE_PREFIX}/login")
    return response


@router.post("/logout")
@page
async def logout(request: Request) -> Response:
    viewer = await _viewer(request)
    await _form(request, viewer)
    plane = _plane(request)

    def end() -> None:
        with plane.db.session() as session:
            sessions.end_session(session, viewer.cookie, now=_now())

    await asyncio.to_thread(end)
    response = _headers(RedirectResponse(f"{CONSOLE_PREFIX}/login?why=signed+out", 303))
    response.delete_cookie(SESSION_COOKIE, path=CONSOLE_PREFIX)
    return response


@router.get("/")
@page
async def home(request: Request) -> Response:
    viewer = await _viewer(request)
    nav = viewer.nav
    if not nav:
        raise Refusal(403, "Nothing here", "no console page is open to your role")
    return _headers(RedirectResponse(nav[0][1], 303))


# --- static files ------------------------------------------------------------------------


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC_FILES:
        return Response(status_code=404)
    return _headers(FileResponse(STATIC / name, media_type=STATIC_FILES[name]))


@router.get("/assets/{name}")
async def asset(request: Request, name: str) -> Response:
    relative = ASSET_FILES.get(name)
    path = assets_dir(_plane(request).settings.console_assets_dir) / relative if relative else None
    if path is None or not path.is_file():
        return Response(status_code=404)
    return _headers(FileResponse(path, media_type="text/javascript"))


# --- controls ----------------------------------------------------------------------------


@router.get("/controls")
@page
async def controls(
    request: Request,
    framework: str = "SOC2",
    since: str | None = None,
    until: str | None = None,
) -> Response:
    """Framework → its controls, each with its evidence over the period; gaps and crosswalk."""
    viewer = await _viewer(request)
    _require(viewer, audit_api.coverage_report, "read evidence")
    audit = _audit(request)
    found = framework_of(audit.catalogs, framework)
    period = pages.period_of(since, until)
    rows = await asyncio.to_thread(pages.control_rows, audit, found, period)
    return _render(
        request,
        "controls.html",
        viewer,
        frameworks=list(audit.catalogs.frameworks.values()),
        framework=found,
        period=period,
        rows=rows,
        gaps=sum(1 for row in rows if row.gap),
    )


@router.get("/controls/{qualified}")
@page
async def control(
    request: Request, qualified: str, since: str | None = None, until: str | None = None
) -> Response:
    """One control: what evidences it over the period, its crosswalk, and its export."""
    viewer = await _viewer(request)
    _require(viewer, audit_api.coverage_report, "read evidence")
    audit = _audit(request)
    framework, found = pages.resolve_control(audit, qualified)
    period = pages.period_of(since, until)

    def read() -> dict[str, Any]:
        counts = audit.evidence_counts(found.qualified_id, period.since, period.until)
        return {
            "counts": counts.get(found.qualified_id, EvidenceCounts()),
            "events": audit.evidence_events(found.qualified_id, period.since, period.until),
            "breakdown": audit.evidence_breakdown(found.qualified_id, period.since, period.until),
        }

    data = await asyncio.to_thread(read)
    related = [
        audit.catalogs.control(q) for q in sorted(audit.catalogs.related(found.qualified_id))
    ]
    return _render(
        request,
        "control.html",
        viewer,
        framework=framework,
        control=found,
        period=period,
        related=related,
        may_export=viewer.may(audit_api.evidence_archive),
        decisions_url=f"{CONSOLE_PREFIX}/decisions?"
        + urlencode(
            {"control": found.qualified_id, "since": period.since_text, "until": period.until_text}
        ),
        **data,
    )


@router.post("/controls/{qualified}/export")
@page
async def export(request: Request, qualified: str) -> Response:
    """Export evidence as the CLI does, then show what verifying it offline finds."""
    viewer = await _viewer(request)
    fields = await _form(request, viewer)
    _require(viewer, audit_api.evidence_archive, "export evidence")
    audit = _audit(request)
    framework, found = pages.resolve_control(audit, qualified)
    period = pages.period_of(fields.get("since"), fields.get("until"))
    exports: pages.Exports = request.app.state.console_exports
    stored = await asyncio.to_thread(
        exports.export, audit, viewer.principal, framework, found, period
    )
    return _render(
        request,
        "export.html",
        viewer,
        framework=framework,
        control=found,
        period=period,
        export=stored,
    )


@router.get("/exports/{export_id}")
@page
async def download(request: Request, export_id: str) -> Response:
    viewer = await _viewer(request)
    _require(viewer, audit_api.evidence_archive, "download evidence")
    exports: pages.Exports = request.app.state.console_exports
    stored = exports.take(export_id, viewer.principal)
    if stored is None:
        raise Refusal(404, "Not found", "no such export of yours (exports expire after an hour)")
    return _headers(
        FileResponse(stored.path, media_type="application/gzip", filename=stored.filename)
    )


# --- decisions ----------------------------------------------------------------------------


@router.get("/decisions")
@page
async def decisions(request: Request) -> Response:
    """Search decisions by time, tenant, outcome, route, tool, rule, control and id."""
    viewer = await _viewer(request)
    _require(viewer, decisions_api.search, "search decisions")
    audit = _audit(request)
    params = dict(request.query_params)
    try:
        query = parse_query(params)
        query.check(audit.catalogs)
    except InvalidQueryError as exc:
        return _render(
            request, "decisions.html", viewer, 400, params=params, error=str(exc), page=None,
            rules=(), query=None,
        )  # fmt: skip

    def read() -> tuple[Any, tuple[str, ...]]:
        audit.index_decisions()
        return audit.search_decisions(query), audit.decision_rules()

    found, rules = await asyncio.to_thread(read)
    if query.decision_id and len(found.hits) == 1 and len(params) == 1:
        return _headers(
            RedirectResponse(f"{CONSOLE_PREFIX}/decisions/{quote(query.decision_id)}", 303)
        )
    next_params = {**{k: v for k, v in params.items() if v}, "before": str(found.next_before)}
    return _render(
        request,
        "decisions.html",
        viewer,
        params=params,
        error=None,
        page=found,
        rules=rules,
        query=query,
        next_url=f"{CONSOLE_PREFIX}/decisions?{urlencode(next_params)}"
        if found.next_before is not None
        else None,
    )


@router.get("/decisions/{decision_id}")
@page
async def decision(request: Request, decision_id: str) -> Response:
    """A decision with its reasons and controls, payload or erased marker, verified proof."""
    viewer = await _viewer(request)
    _require(viewer, decisions_api.decision, "read decisions")
    audit = _audit(request)
    if not 0 < len(decision_id) <= decisions_api.MAX_DECISION_ID:
        raise Refusal(400, "Bad request", "a decision id is 1 to 128 characters")
    record = await asyncio.to_thread(audit.decision_record, decision_id)
    try:
        checkpoint = record.proof.verify(audit.verifier, leaf=record.entry)
        proof_result: tuple[bool, str] = (
            True,
            f"leaf {record.hit.index} is in the tree of {checkpoint.size} leaves signed by "
            f"{audit.origin}",
        )
    except NexusError as exc:
        proof_result = (False, str(exc))
    plane = _plane(request)
    revisions = []
    for bundle, revision in sorted(record.hit.bundles.items()):
        rollouts = await asyncio.to_thread(_rollouts_of, plane, revision)
        revisions.append((bundle, revision, rollouts))
    return _render(
        request,
        "decision.html",
        viewer,
        record=record,
        erased=record.payload_status is not PayloadStatus.PRESENT,
        proof_result=proof_result,
        revisions=revisions,
        entry_text=record.entry.decode(),
    )


def _rollouts_of(plane: ControlPlane, revision: str) -> list[int]:
    return [r.id for r in plane.rollouts.recent(100, diff=False) if r.revision == revision]


# --- rollouts and fleet ---------------------------------------------------------------------


@router.get("/rollouts")
@page
async def rollouts(request: Request) -> Response:
    viewer = await _viewer(request)
    _require(viewer, rollouts_api.list_rollouts, "read rollouts")
    plane = _plane(request)
    recent, status = await asyncio.gather(
        asyncio.to_thread(plane.rollouts.recent, diff=False),
        asyncio.to_thread(plane.rollouts.status),
    )
    return _render(request, "rollouts.html", viewer, rollouts=recent, status=status)


def _rollout_context(
    plane: ControlPlane, rollout_id: int, *, replays: bool = False
) -> dict[str, Any]:
    """The rollout, its history and its waves (live), and with ``replays`` its replay reports;
    never its diff, which is paged (`rollout_diff`)."""
    row, history = plane.rollouts.get(rollout_id, diff=False)
    status = plane.rollouts.status()
    live = status.rollout is not None and status.rollout.id == row.id
    waves: dict[int, list[Any]] = {}
    for region in status.regions if live else ():
        waves.setdefault(region.wave, []).append(region)
    return {
        "rollout": row,
        "history": history,
        "live": live,
        "waves": sorted(waves.items()),
        "replays": pages.replays_of(plane.db, row.revision) if replays else [],
    }


@router.get("/rollouts/{rollout_id}")
@page
async def rollout(request: Request, rollout_id: int) -> Response:
    """A rollout: its waves and each enforcer's state (live), its diff, history and actions."""
    viewer = await _viewer(request)
    _require(viewer, rollouts_api.get_rollout, "read rollouts")
    _check_id(rollout_id)
    plane, fields = _plane(request), dict(request.query_params)
    base = f"{CONSOLE_PREFIX}/rollouts/{rollout_id}"
    context, section = await asyncio.gather(
        asyncio.to_thread(_rollout_context, plane, rollout_id, replays=True),
        asyncio.to_thread(rollout_diff.diff_section, plane, rollout_id, base, fields),
    )
    state: RolloutState = context["rollout"].state
    actions = [
        name
        for name in _possible(state, context["rollout"].needs_approval)
        if viewer.may(ACTIONS[name])
    ]
    done = request.query_params.get("done")
    return _render(
        request,
        "rollout.html",
        viewer,
        actions=actions,
        reason_taken=REASON_TAKEN,
        done=done if done in ACTIONS else None,
        section=section,
        **context,
    )


@router.get("/rollouts/{rollout_id}/live")
@page
async def rollout_live(request: Request, rollout_id: int) -> Response:
    """The waves section alone, for the page to refresh itself every few seconds."""
    viewer = await _viewer(request)
    _require(viewer, rollouts_api.get_rollout, "read rollouts")
    _check_id(rollout_id)
    context = await asyncio.to_thread(_rollout_context, _plane(request), rollout_id)
    return _render(request, "_waves.html", viewer, **context)


def _check_id(rollout_id: int) -> None:
    if not 1 <= rollout_id <= rollouts_api.MAX_ROLLOUT_ID:
        raise Refusal(404, "Not found", f"no rollout {rollout_id}")


def _possible(state: RolloutState, needs_approval: bool) -> list[str]:
    if state is RolloutState.PENDING_APPROVAL:
        return ["approve", "rollback"]
    if state is RolloutState.HELD:
        return ["override"]
    if state is RolloutState.ROLLING:
        return ["promote", "pause", "rollback"]
    if state is RolloutState.PAUSED:
        return ["resume", "promote", "rollback"]
    return []


@router.post("/rollouts/{rollout_id}/{action}")
@page
async def rollout_action(request: Request, rollout_id: int, action: str) -> Response:
    """Approve, promote, pause, resume or roll back: the API route's own call, confirmed."""
    viewer = await _viewer(request)
    fields = await _form(request, viewer)
    endpoint = ACTIONS.get(action)
    if endpoint is None:
        raise Refusal(404, "Not found", f"no rollout action {action!r}")
    _require(viewer, endpoint, f"{action} rollouts")
    _check_id(rollout_id)
    if fields.get("confirm") != "yes":
        raise Refusal(400, "Not confirmed", f"tick the box to confirm you mean to {action}")
    reason = fields.get("reason", "").strip() or None
    if action in REASON_TAKEN and reason is None:
        raise Refusal(400, "A reason is needed", f"say why you {action} this rollout")
    if reason is not None and len(reason) > 1000:
        raise Refusal(400, "Bad request", "a reason is at most 1000 characters")
    plane, principal = _plane(request), viewer.principal
    if action == "approve":
        await rollouts_api.approve(
            request, rollout_id, ApprovalRequest(comment=reason), plane, principal
        )
    elif action == "override":
        await rollouts_api.override(rollout_id, GateOverride(reason=reason), plane, principal)
    elif action == "promote":
        force = fields.get("force") == "yes"
        await rollouts_api.promote(rollout_id, Promotion(force=force), plane, principal)
    elif action == "pause":
        await rollouts_api.pause(rollout_id, Reason(reason=reason), plane, principal)
    elif action == "resume":
        await rollouts_api.resume(rollout_id, plane, principal)
    else:
        await rollouts_api.rollback(rollout_id, Reason(reason=reason), plane, principal)
    return _headers(RedirectResponse(f"{CONSOLE_PREFIX}/rollouts/{rollout_id}?done={action}", 303))


@router.get("/fleet")
@page
async def fleet(request: Request, region: str | None = None) -> Response:
    """Every enforcer by region: revision held and active, last seen, activation errors."""
    viewer = await _viewer(request)
    _require(viewer, fleet_api.get_fleet, "read the fleet")
    plane = _plane(request)
    views = await asyncio.to_thread(plane.serving.enforcers, region or None)
    by_region: dict[str, list[Any]] = {}
    for view in views:
        by_region.setdefault(view.region, []).append(view)
    return _render(
        request,
        "fleet.html",
        viewer,
        regions=sorted(by_region.items()),
        region=region,
        known=plane.known_regions(),
        count=len(views),
    )


# --- budgets -------------------------------------------------------------------------------


@router.get("/budgets")
@page
async def budgets(
    request: Request, period: str | None = None, tenant: str | None = None
) -> Response:
    """Spend per tenant, model, feature and endpoint over the month, against soft and hard caps."""
    viewer = await _viewer(request)
    _require(viewer, budgets_api.get_budgets, "read budgets")
    if period and not re.fullmatch(budgets_api.PERIOD_PATTERN, period):
        raise Refusal(400, "Bad request", f"period {period!r} is not YYYY-MM")
    plane = _plane(request)
    chosen = tenant.strip() if tenant else None
    overview = await asyncio.to_thread(
        lambda: plane.budgets.page(period or None, tenant=chosen, limit=BUDGET_ROWS)
    )
    rows = overview.tenants
    if chosen and not rows:
        raise Refusal(404, "Not found", f"the policy in force has no tenant {chosen!r}")
    daily = sorted(overview.daily.items())
    tenant_daily = (
        sorted(
            (await asyncio.to_thread(plane.budgets.spend.daily, overview.period, chosen)).items()
        )
        if chosen
        else []
    )
    chart = {
        "days": [day for day, _ in daily],
        "models": _series(daily, "models"),
        "features": _series(daily, "features"),
        "endpoints": _series(daily, "endpoints"),
    }
    if chosen:
        spent = 0.0
        cumulative = []
        for _, totals in tenant_daily:
            spent += totals.total
            cumulative.append(round(spent, 6))
        row = rows[0]
        chart["tenant"] = {
            "tenant": chosen,
            "days": [day for day, _ in tenant_daily],
            "cumulative": cumulative,
            "soft_cap": round(row.cap_usd * row.soft_cap_ratio, 6),
            "hard_cap": row.cap_usd,
        }
    return _render(
        request,
        "budgets.html",
        viewer,
        overview=overview,
        rows=rows,
        more=0 if chosen else max(0, overview.tenant_count - len(rows)),
        tenant=chosen,
        chart=chart,
        has_chart_library=(assets_dir(plane.settings.console_assets_dir) / ASSET_FILES[
            "chart.umd.min.js"]).is_file(),
    )  # fmt: skip


def _series(daily: list[tuple[str, Any]], attribute: str) -> dict[str, list[float]]:
    names = sorted({name for _, totals in daily for name in getattr(totals, attribute)})
    return {
        name: [round(getattr(totals, attribute).get(name, 0.0), 6) for _, totals in daily]
        for name in names
    }


# --- log health ----------------------------------------------------------------------------


@router.get("/log")
@page
async def log_page(request: Request) -> Response:
    """Tree size, last checkpoint and its age, verification status, witnesses' cosignatures."""
    viewer = await _viewer(request)
    _require(viewer, audit_api.checkpoint, "read the log's health")
    audit = _audit(request)
    verifier: pages.FullVerifier = request.app.state.console_verifier
    health = await asyncio.to_thread(pages.log_health, audit, verifier)
    return _render(
        request,
        "log.html",
        viewer,
        health=health,
        running=verifier.running,
        may_verify=viewer.may(audit_api.inclusion_proof),
        age=_age(health.checkpoint_age_s),
    )


@router.post("/log/verify")
@page
async def verify(request: Request) -> Response:
    """Recompute every leaf hash, subtree and checkpoint (`nexus-policy audit verify`)."""
    viewer = await _viewer(request)
    await _form(request, viewer)
    _require(viewer, audit_api.inclusion_proof, "verify the log")
    verifier: pages.FullVerifier = request.app.state.console_verifier
    verifier.start(_audit(request))
    return _headers(RedirectResponse(f"{CONSOLE_PREFIX}/log", 303))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{math.floor(seconds)} s"
    if seconds < 7200:
        return f"{math.floor(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


# --- mounting --------------------------------------------------------------------------------


def install(
    app: FastAPI, plane: ControlPlane, errors: ErrorTable, api_routers: list[APIRouter]
) -> None:
    """Mount the console on ``app``, whose API is ``api_routers`` and error table ``errors``."""
    app.state.console_roles = {}
    app.state.console_api_routers = list(api_routers)
    app.state.console_error_table = errors
    app.state.console_exports = pages.Exports(plane.settings.console_exports_dir)
    app.state.console_verifier = pages.FullVerifier()
    templates.env.globals["decision_query"] = DecisionQuery
    app.include_router(router)
