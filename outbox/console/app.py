"""The console's Starlette app: its routes, sign-in, and how a page is answered.

Every page but the sign-in form needs a signed session (outbox/console/auth.py); every POST
needs its CSRF token (outbox/console/csrf.py); reads and writes happen in a thread, one
session a request, through outbox/console/pages.py and replay.py. Templates are Jinja2
with autoescaping on for every template and every stored string made visible
(control characters written as `\\x1b`), so nothing a webhook carried is ever markup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from outbox.cli.common import visible
from outbox.cli.event_display import age
from outbox.console import pages
from outbox.console.auth import SESSION_COOKIE, SESSION_SECONDS, ConsoleKeys, cookie_attributes
from outbox.console.auth import Session as ConsoleSession
from outbox.console.csrf import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    login_token_matches,
    new_login_token,
    session_token,
    session_token_matches,
)
from outbox.console.forms import BadInput, id_list, read_form
from outbox.console.headers import SecurityHeaders
from outbox.console.replay import MAX_REPLAY, ReplayRuns, plan_replay
from outbox.db import utcnow
from outbox.driver.errors import DatabaseError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from outbox.settings import Settings

T = TypeVar("T")
log = logging.getLogger("outbox.console")

#: Seconds a wrong token waits before its answer: online guessing is slowed down.
WRONG_TOKEN_DELAY = 0.5
#: Seconds the sign-in form's double-submit cookie lasts.
LOGIN_FORM_SECONDS = 600
STATIC = Path(__file__).resolve().parent / "static"


def templates() -> Environment:
    """The console's Jinja2 environment: autoescaping always, strict about missing names."""
    env = Environment(
        loader=PackageLoader("outbox.console", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        finalize=_visible,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = lambda value: f"{value:%Y-%m-%d %H:%M:%S}" if value else ""
    env.filters["age"] = lambda value: age(value) if value is not None else ""
    env.filters["first_line"] = lambda value: str(value).splitlines()[0] if value else ""
    env.filters["path"] = lambda value: quote(str(value), safe="")
    return env


def _visible(value: Any) -> Any:
    """Every string printed: control characters (ESC, NUL, bidi overrides) shown as escapes
    (outbox/cli/common.py's `visible`), newlines and tabs kept; autoescaping follows."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value, lines=True)
    return value


class Console:
    """The console's pages over one database, for operators holding one token."""

    def __init__(self, settings: Settings, keys: ConsoleKeys, sessions: sessionmaker[Session]):
        self.settings = settings
        self.keys = keys
        self.sessions = sessions
        self.env = templates()
        self.runs = ReplayRuns(settings, sessions)

    # --- answering ---------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        status_code: int = 200,
        session: ConsoleSession | None = None,
        **context: Any,
    ) -> HTMLResponse:
        html = self.env.get_template(template).render(
            path=request.url.path,
            csrf=session_token(self.keys, session) if session else "",
            csrf_field=CSRF_FIELD,
            signed_in=session is not None,
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    def problem(
        self, request: Request, status_code: int, reason: str, session: ConsoleSession | None
    ) -> Response:
        """An error: a page for a browser, `{"error": reason}` for anything else."""
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"error": reason}, status_code=status_code)
        return self.render(
            request, "problem.html", status_code, session, status=status_code, reason=reason
        )

    async def read(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`work(session, …)` in a thread, on a session of its own that writes nothing."""

        def in_session() -> T:
            with self.sessions() as session:
                try:
                    return work(session, *args, **kwargs)
                finally:
                    session.rollback()

        return await run_in_threadpool(in_session)

    def signed_in(self, request: Request) -> ConsoleSession | None:
        return self.keys.session_of(request.cookies.get(SESSION_COOKIE))

    async def page(
        self,
        request: Request,
        template: str,
        work: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> Response:
        """A signed-in page: `work`'s result as `page` in its template, or the error."""
        session = self.signed_in(request)
        if session is None:
            return to_login(request)
        try:
            data = await self.read(work, *args, **kwargs)
        except BadInput as exc:
            return self.problem(request, 400, str(exc), session)
        except pages.NotFound as exc:
            return self.problem(request, 404, str(exc), session)
        except (DatabaseError, DBAPIError) as exc:
            reason = exc.reason if isinstance(exc, DatabaseError) else str(exc.orig or exc)
            log.warning("console page failed on the database", extra={"path": request.url.path,
                        "error": type(exc).__name__})  # fmt: skip
            return self.problem(
                request, 503, f"the database did not answer: {reason.splitlines()[0]}", session
            )
        return self.render(request, template, 200, session, page=data)

    # --- signing in and out -------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if self.signed_in(request) is not None:
            return RedirectResponse(local_path(request.query_params.get("next")), 303)
        return self.login_page(request, 200, request.query_params.get("next"), None)

    def login_page(
        self, request: Request, status_code: int, next_path: str | None, error: str | None
    ) -> Response:
        """The sign-in form, with a fresh double-submit token; back to `next_path` after."""
        token = new_login_token()
        response = self.render(
            request,
            "login.html",
            status_code,
            login_csrf=token,
            next=local_path(next_path),
            error=error,
        )
        response.set_cookie(LOGIN_CSRF_COOKIE, token, **cookie_attributes(LOGIN_FORM_SECONDS))  # type: ignore[arg-type]
        return response

    async def login(self, request: Request) -> Response:
        try:
            form = await read_form(request)
        except BadInput as exc:
            return self.problem(request, 400, str(exc), None)
        if not login_token_matches(request.cookies.get(LOGIN_CSRF_COOKIE), form.get(CSRF_FIELD)):
            return self.problem(
                request, 403, "the sign-in form expired or came from elsewhere: reload it", None
            )
        if not self.keys.token_matches(form.get("token", "")):
            await asyncio.sleep(WRONG_TOKEN_DELAY)
            return self.login_page(
                request, 401, form.get("next"), "That is not the console's token."
            )
        response = RedirectResponse(local_path(form.get("next")), 303)
        response.set_cookie(
            SESSION_COOKIE,
            self.keys.new_session(),
            **cookie_attributes(SESSION_SECONDS),  # type: ignore[arg-type]
        )
        response.delete_cookie(
            LOGIN_CSRF_COOKIE, path="/", secure=True, httponly=True, samesite="strict"
        )
        return response

    async def logout(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        response = RedirectResponse("/login", 303)
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict"
        )
        return response

    async def checked_post(
        self, request: Request
    ) -> tuple[ConsoleSession, dict[str, str]] | Response:
        """A signed-in POST's session and form, or the answer refusing it (401, 403, 400)."""
        session = self.signed_in(request)
        if session is None:
            return self.problem(request, 401, "not signed in", None)
        try:
            form = dict(await read_form(request))
        except BadInput as exc:
            return self.problem(request, 400, str(exc), session)
        if not session_token_matches(self.keys, session, form.get(CSRF_FIELD)):
            return self.problem(
                request, 403, "missing or wrong CSRF token: reload the page", session
            )
        return session, form

    # --- pages --------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        return await self.page(request, "overview.html", pages.overview, now=utcnow())

    async def events(self, request: Request) -> Response:
        return await self.page(
            request, "events.html", pages.events_page, request.query_params, now=utcnow()
        )

    async def event(self, request: Request) -> Response:
        return await self.page(request, "event.html", pages.event_page, request.path_params["ref"])

    async def account_lookup(self, request: Request) -> Response:
        ref = request.query_params.get("ref", "").strip()
        if self.signed_in(request) is None:
            return to_login(request)
        return RedirectResponse(f"/accounts/{quote(ref, safe='')}" if ref else "/", 303)

    async def account(self, request: Request) -> Response:
        grace = timedelta(days=self.settings.past_due_grace_days)
        return await self.page(
            request,
            "account.html",
            pages.account_page,
            request.path_params["ref"],
            now=utcnow(),
            grace=grace,
        )

    async def attention(self, request: Request) -> Response:
        return await self.page(request, "attention.html", pages.attention_page)

    async def replay_plan(self, request: Request) -> Response:
        return await self.page(
            request, "replay_plan.html", plan_replay, request.query_params, now=utcnow()
        )

    async def replay_start(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        try:
            ids = id_list(form.get("ids", ""), most=MAX_REPLAY)
        except BadInput as exc:
            return self.problem(request, 400, str(exc), session)
        if not ids:
            return self.problem(request, 400, "no events to replay", session)
        run = await run_in_threadpool(self.runs.start, ids, now=utcnow())
        return RedirectResponse(f"/replay/runs/{run.id}", 303)

    async def replay_run(self, request: Request) -> Response:
        session = self.signed_in(request)
        if session is None:
            return to_login(request)
        run_id = request.path_params["run_id"]
        run = self.runs.get(run_id)
        if run is None:
            return self.problem(
                request, 404, f"no replay {run_id} (the console restarted?)", session
            )
        return self.render(request, "replay_run.html", 200, session, run=run)


def to_login(request: Request) -> Response:
    """Off to the sign-in form, which brings the operator back here."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': target})}", 303)


def local_path(target: str | None) -> str:
    """`target` when it is a path of this console, else the overview: never a redirect to
    another site (`//evil.example`, `/\\evil.example`, `https://…`)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or any(ord(c) < 0x21 or c == "\\" for c in target)
    ):
        return "/"
    return target


def create_app(settings: Settings, *, engine: Engine | None = None) -> Starlette:
    """The console for `settings`' database; CONSOLE_TOKEN must be set."""
    from outbox.db import make_engine, make_sessionmaker

    if settings.console_token is None:
        raise ValueError("CONSOLE_TOKEN is not set")
    keys = ConsoleKeys(settings.console_token.get_secret_value())
    if engine is None:
        engine = make_engine(
            settings.database_url, pool_size=4, timeout=settings.database_timeout_seconds
        )
    console = Console(settings, keys, make_sessionmaker(engine))
    routes = [
        Route("/login", console.login_form, methods=["GET"]),
        Route("/login", console.login, methods=["POST"]),
        Route("/logout", console.logout, methods=["POST"]),
        Route("/", console.overview, methods=["GET"]),
        Route("/events", console.events, methods=["GET"]),
        Route("/events/{ref}", console.event, methods=["GET"]),
        Route("/accounts", console.account_lookup, methods=["GET"]),
        Route("/accounts/{ref}", console.account, methods=["GET"]),
        Route("/attention", console.attention, methods=["GET"]),
        Route("/replay", console.replay_plan, methods=["GET"]),
        Route("/replay", console.replay_start, methods=["POST"]),
        Route("/replay/runs/{run_id:int}", console.replay_run, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    app.state.console = console
    app.state.engine = engine
    return app
