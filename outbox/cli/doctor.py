"""`outbox doctor`: checks a deployment's configuration and services in one go.

One line per check, with what to do when it fails; exit 1 when any check fails (a warning
does not fail). `--json`: one object per check. Every check runs, whatever the others
found, and each network call waits at most DOCTOR_TIMEOUT seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import typer

from outbox.cli.common import (
    EXIT_FAILED,
    JSON_OPTION,
    friendly_errors,
    get_settings,
    print_json_lines,
    say,
)
from outbox.cli.run import safe_url, schema_of

if TYPE_CHECKING:
    from outbox.settings import Settings

Verdict = Literal["ok", "warn", "fail"]

#: Seconds one network call of a check may take (connect, then each read), whatever
#: PROVIDER_TIMEOUT_SECONDS says: a doctor answers within a minute.
DOCTOR_TIMEOUT = 10.0


@dataclass(frozen=True)
class Check:
    """One check's verdict: what was looked at, what was found, and what to do."""

    name: str
    verdict: Verdict
    detail: str
    #: What to do about it (empty when all is well).
    fix: str = ""

    def line(self) -> str:
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[self.verdict]
        return f"{mark} {self.name:<22} {self.detail}" + (f": {self.fix}" if self.fix else "")


def register(app: typer.Typer) -> None:
    app.command()(doctor)


@friendly_errors
def doctor(as_json: bool = JSON_OPTION) -> None:
    """Check the database and its migrations, Redis, the webhook secrets, the GitHub App,
    the Stripe key, the pack catalog and STRIPE_MODE; exit 1 if any check fails."""
    settings = get_settings()
    checks = run_checks(settings)
    if as_json:
        print_json_lines(asdict(check) for check in checks)
    else:
        for check in checks:
            say(check.line())
    if any(check.verdict == "fail" for check in checks):
        raise typer.Exit(EXIT_FAILED)


def run_checks(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    for name, check in CHECKS:
        try:
            checks.extend(check(settings))
        except Exception as exc:  # a check that broke is a failed check, never a traceback
            checks.append(Check(name, "fail", f"could not be checked: {_error(exc)}"))
    return checks


def check_database(settings: Settings) -> list[Check]:
    from sqlalchemy.exc import DBAPIError

    where = safe_url(settings.database_url)
    try:
        state = schema_of(settings.database_url, DOCTOR_TIMEOUT)
    except DBAPIError as exc:
        return [
            Check("database", "fail", f"{where} unreachable ({_error(exc)})", "check DATABASE_URL"),
            Check("migrations", "fail", "not checked: the database is unreachable"),
        ]
    database = Check("database", "ok", f"{where} answers")
    if state.problem is not None:
        return [database, Check("migrations", "fail", state.problem)]
    if state.before_swap:
        return [
            database,
            Check(
                "migrations",
                "warn",
                f"at {', '.join(state.database)}: the move to partitions is not finished",
                "run `outbox migrate` (docs/partitions.md)",
            ),
        ]
    return [database, Check("migrations", "ok", f"at the head ({', '.join(state.heads)})")]


def check_autovacuum(settings: Settings) -> list[Check]:
    """On Postgres: autovacuum on, so the dead rows every finished webhook leaves are reused."""
    from sqlalchemy.exc import DBAPIError

    from outbox.autovacuum import autovacuum_state
    from outbox.db import make_engine

    engine = make_engine(settings.database_url, pool_size=1, timeout=DOCTOR_TIMEOUT)
    try:
        state = autovacuum_state(engine)
    except DBAPIError:
        return []  # an unreachable database is the database check's failure, named there
    finally:
        engine.dispose()
    if state is None:
        return []  # SQLite: no autovacuum to run
    if state.problem is not None:
        return [
            Check(
                "autovacuum",
                "warn",
                f"{state.problem}: each drain slows as dead rows pile up",
                "turn autovacuum on (docs/deployment.md)",
            )
        ]
    return [Check("autovacuum", "ok", "on, for the server and every table")]


def check_detached_partitions(settings: Settings) -> list[Check]:
    """On a partitioned Postgres: no partition a purge detached and stopped before dropping."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from outbox.db import make_engine
    from outbox.partition_reads import DETACHED_PARTITIONS
    from outbox.partitions import is_partitioned

    engine = make_engine(settings.database_url, pool_size=1, timeout=DOCTOR_TIMEOUT)
    try:
        with engine.connect() as conn:
            if not is_partitioned(conn):
                return []
            names = [str(row.name) for row in conn.execute(text(DETACHED_PARTITIONS))]
    except DBAPIError:
        return []  # an unreachable database is the database check's failure, named there
    finally:
        engine.dispose()
    if not names:
        return []
    return [
        Check(
            "detached partitions",
            "warn",
            f"{len(names)} left by a purge that stopped before dropping them: {', '.join(names)}",
            "run `outbox purge --older-than` again: it drops them first (docs/operations.md)",
        )
    ]


def check_redis(settings: Settings) -> list[Check]:
    import redis

    where = safe_url(settings.redis_url)
    try:
        redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=DOCTOR_TIMEOUT, socket_timeout=DOCTOR_TIMEOUT
        ).ping()
    except redis.RedisError as exc:
        return [
            Check(
                "redis",
                "fail",
                f"{where} unreachable ({_error(exc)})",
                "start Redis or set REDIS_URL (workers and the ingress's doorbell need it)",
            )
        ]
    return [Check("redis", "ok", f"{where} answers")]


def check_webhook_secrets(settings: Settings) -> list[Check]:
    github, stripe = settings.github_secrets, settings.stripe_secrets
    checks = [
        Check("github webhook secret", "ok", f"{len(github)} configured")
        if github
        else Check(
            "github webhook secret",
            "fail",
            "GITHUB_WEBHOOK_SECRET is not set (every GitHub webhook gets 503)",
            "set it to the webhook secret of the GitHub App's settings",
        )
    ]
    if not stripe:
        checks.append(
            Check(
                "stripe webhook secret",
                "fail",
                "STRIPE_WEBHOOK_SECRET is not set (every Stripe webhook gets 503)",
                "set it to the endpoint's signing secret (whsec_…) from Stripe's dashboard",
            )
        )
    elif not all(secret.startswith("whsec_") for secret in stripe):
        checks.append(
            Check(
                "stripe webhook secret",
                "fail",
                "a STRIPE_WEBHOOK_SECRET does not start with whsec_ (is it an API key?)",
                "use the endpoint's signing secret from Stripe's dashboard",
            )
        )
    else:
        checks.append(Check("stripe webhook secret", "ok", f"{len(stripe)} configured"))
    return checks


def check_github_app(settings: Settings) -> list[Check]:
    """The App's id and key make a JWT that GitHub accepts: GET /app answers the App."""
    import httpx
    from githubkit import AppAuthStrategy, GitHub
    from githubkit.cache import MemCacheStrategy
    from githubkit.exception import RequestError, RequestFailed

    if not settings.github_app_id or settings.github_private_key() is None:
        return [
            Check(
                "github app",
                "fail",
                "GITHUB_APP_ID or GITHUB_APP_PRIVATE_KEY(_FILE) is not set",
                "set both from the App's settings page (PR jobs and onboarding need them)",
            )
        ]
    github = GitHub(
        AppAuthStrategy(settings.github_app_id, settings.github_private_key() or ""),
        base_url=settings.github_api_url.rstrip("/") + "/",
        auto_retry=False,
        http_cache=False,
        timeout=DOCTOR_TIMEOUT,
        # A JWT of its own, never one an earlier client of this process cached for the id.
        cache_strategy=MemCacheStrategy(),
    )
    try:
        app: dict[str, Any] = github.rest.apps.get_authenticated().json() or {}  # type: ignore[assignment]
    except RequestFailed as exc:
        status = exc.response.status_code
        return [
            Check(
                "github app",
                "fail",
                f"GET /app answered {status} to the App's JWT",
                "check GITHUB_APP_ID and that the key is one of that App's private keys",
            )
        ]
    except RequestError as exc:
        if isinstance(exc.exc, httpx.HTTPError):
            what, fix = f"GitHub did not answer ({_error(exc.exc)})", "check GITHUB_API_URL"
        else:  # a key that is not a PEM private key cannot sign the JWT
            what = f"GITHUB_APP_PRIVATE_KEY cannot sign a JWT ({_error(exc.exc)})"
            fix = "use the .pem file GitHub generated for the App"
        return [Check("github app", "fail", what, fix)]
    found = str(app.get("id"))
    if found != str(settings.github_app_id).strip():
        return [
            Check(
                "github app",
                "fail",
                f"GitHub says this key belongs to App {found}, not {settings.github_app_id}",
                "fix GITHUB_APP_ID",
            )
        ]
    return [Check("github app", "ok", f"App {found} ({app.get('slug')}) accepts its JWT")]


def check_stripe(settings: Settings) -> list[Check]:
    """The key reads (one call: the latest event), and its mode agrees with STRIPE_MODE."""
    import stripe

    if settings.stripe_api_key is None:
        key_check = Check(
            "stripe api key",
            "fail",
            "STRIPE_API_KEY is not set",
            "set a secret or restricted key (checkouts, usage reports and reconcile need it)",
        )
        return [key_check, _mode_check(settings, None)]
    key = settings.stripe_api_key.get_secret_value()
    key_mode = _key_mode(key)
    client = stripe.StripeClient(
        key,
        http_client=stripe.HTTPXClient(timeout=DOCTOR_TIMEOUT, allow_sync_methods=True),
        base_addresses={"api": settings.stripe_api_base.rstrip("/")},
        max_network_retries=0,
    )
    try:
        client.v1.events.list({"limit": 1})
    except stripe.AuthenticationError:
        key_check = Check(
            "stripe api key", "fail", "Stripe refused the key (401)", "check STRIPE_API_KEY"
        )
    except stripe.PermissionError:
        key_check = Check(
            "stripe api key",
            "fail",
            "the key may not read events (403)",
            "give the restricted key read access to events, checkout sessions and prices",
        )
    except stripe.StripeError as exc:
        key_check = Check("stripe api key", "fail", f"Stripe did not answer ({_error(exc)})")
    else:
        key_check = Check("stripe api key", "ok", f"a {key_mode or 'unknown'}-mode key that reads")
    return [key_check, _mode_check(settings, key_mode)]


def _key_mode(key: str) -> str | None:
    for mode in ("live", "test"):
        if key.startswith((f"sk_{mode}_", f"rk_{mode}_")):
            return mode
    return None


def _mode_check(settings: Settings, key_mode: str | None) -> Check:
    mode = settings.stripe_mode
    if mode == "any":
        return Check(
            "stripe mode",
            "warn",
            "STRIPE_MODE=any applies test and live events alike",
            "set live (or test) outside development",
        )
    if key_mode is not None and key_mode != mode:
        return Check(
            "stripe mode",
            "fail",
            f"STRIPE_MODE={mode} but STRIPE_API_KEY is a {key_mode}-mode key",
            "use a key of the mode whose events are applied",
        )
    return Check("stripe mode", "ok", f"{mode}: {_other(mode)}-mode events are stored as skipped")


def _other(mode: str) -> str:
    return "test" if mode == "live" else "live"


def check_pack_catalog(settings: Settings) -> list[Check]:
    from domain.packs import list_packs
    from outbox.cli.database import open_database

    with open_database(settings) as (_, sessions), sessions() as session:
        packs = list_packs(session)
    if not packs:
        return [
            Check(
                "pack catalog",
                "warn",
                "no credit pack on sale: a checkout buys no credits",
                "`outbox packs load FILE` (or ignore if nothing is sold as packs)",
            )
        ]
    return [Check("pack catalog", "ok", f"{len(packs)} pack(s) on sale")]


def _error(exc: BaseException) -> str:
    # Imported here: outbox.handling brings SQLAlchemy, which every CLI start would pay for.
    from outbox.handling import describe

    return describe(exc)[:200]


#: Every check, in the order printed; each may give more than one line.
CHECKS: list[tuple[str, Callable[[Settings], list[Check]]]] = [
    ("database", check_database),
    ("autovacuum", check_autovacuum),
    ("detached partitions", check_detached_partitions),
    ("redis", check_redis),
    ("webhook secrets", check_webhook_secrets),
    ("github app", check_github_app),
    ("stripe api key", check_stripe),
    ("pack catalog", check_pack_catalog),
]
