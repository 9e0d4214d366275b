"""The one settings object, read from environment variables once per process.

Every field is documented in the README with its default. Secrets are
`SecretStr` so that printing or logging the settings never shows them.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from outbox.reader_settings import (
    DEFAULT_DATABASE_TIMEOUT_SECONDS,
    DEFAULT_DATABASE_URL,
    DEFAULT_WEBHOOK_DEADLINE_SECONDS,
)

StripeMode = Literal["live", "test", "any"]

DEFAULT_MAX_BODY_BYTES = 25 * 1024 * 1024  #: bytes; GitHub caps payloads at 25 MiB


def split_secrets(raw: SecretStr | str | None) -> tuple[str, ...]:
    """Several secrets may be valid at once (rotation): comma-separated, blanks ignored."""
    if raw is None:
        return ()
    text = raw.get_secret_value() if isinstance(raw, SecretStr) else raw
    return tuple(part.strip() for part in text.split(",") if part.strip())


_INTERVAL = re.compile(r"^\s*(\d{1,4})\s*([hd])\s*$", re.IGNORECASE)


def parse_partition_interval(text: str) -> timedelta:
    """`6h`, `1d`, `7d`: hours or days; raises ValueError for anything else."""
    match = _INTERVAL.match(text)
    if not match:
        raise ValueError(f"bad partition interval {text!r} (use hours or days: 6h, 1d, 7d)")
    hours = int(match.group(1)) * (24 if match.group(2).lower() == "d" else 1)
    return timedelta(hours=hours)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Prefix of Dramatiq's Redis keys, so deployments (or test runs) can share a server.
    redis_namespace: str = "outbox"

    github_webhook_secret: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_webhook_tolerance: int = Field(default=300, ge=1)  #: seconds
    stripe_mode: StripeMode = "live"
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)
    #: The public edge (ingress/edge.py, ingress/limits.py): what one connection may cost.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)  #: request line and headers
    header_timeout_seconds: float = Field(default=10.0, gt=0)  #: first byte to end of head
    body_timeout_seconds: float = Field(default=60.0, gt=0)  #: end of head to end of body
    max_connections: int = Field(default=1000, ge=1)  #: open connections of one process
    #: bytes one process holds of bodies still arriving, past each one's first 64 KiB
    body_buffer_bytes: int = Field(default=128 * 1024 * 1024, ge=1024)
    #: Threads of one ingress process committing webhook batches at once (Postgres only).
    ingress_writers: int = Field(default=4, ge=1, le=64)

    # --- deadlines (outbox/deadlines.py) ---
    #: Seconds within which every webhook is answered: 2xx once committed, else 503.
    webhook_deadline_seconds: float = Field(default=DEFAULT_WEBHOOK_DEADLINE_SECONDS, gt=0)
    #: Seconds one database call may take: the server's statement_timeout; a call with no
    #: answer a second later costs its connection, and the next call opens a new one.
    database_timeout_seconds: float = Field(default=DEFAULT_DATABASE_TIMEOUT_SECONDS, gt=0)
    #: Seconds one Redis call may take before its connection is dropped and replaced.
    redis_timeout_seconds: float = Field(default=2.0, gt=0)
    #: Seconds a GitHub or Stripe API call may wait to connect, and then for each read.
    provider_timeout_seconds: float = Field(default=30.0, gt=0)

    stripe_api_key: SecretStr | None = None
    stripe_api_base: str = "https://api.stripe.com"
    stripe_meter_event_name: str = "pr_jobs"
    #: Hours after the first report attempt that may have reached Stripe when a usage record
    #: stops for an operator instead of being sent again: Stripe remembers a meter event's
    #: identifier and idempotency key for about 24 hours.
    usage_resend_window_hours: float = Field(default=23.0, gt=0, le=24)

    github_app_id: str | None = None
    github_app_private_key: SecretStr | None = None
    github_app_private_key_file: Path | None = None
    github_api_url: str = "https://api.github.com"

    welcome_credits: Decimal = Field(default=Decimal("50"), ge=0)

    # Billing (domain/subscriptions.py): a past-due subscription keeps its paid features
    # this many days after it became past due, while Stripe retries the payment.
    past_due_grace_days: float = Field(default=3.0, ge=0)

    #: Processing: how long a claimed row stays owned by its worker before others may take it.
    lease_seconds: int = Field(default=300, ge=1)
    #: Retry policy (see outbox/retry.py): first delay, cap, and attempts before a row is dead.
    retry_base_seconds: float = Field(default=10.0, gt=0)
    retry_max_delay_seconds: float = Field(default=7200.0, gt=0)
    retry_max_attempts: int = Field(default=20, ge=1)
    #: Seconds between two passes of the sweeper.
    sweep_interval_seconds: float = Field(default=5.0, gt=0)

    # --- storage on Postgres (outbox/partitions.py, docs/partitions.md) ---
    #: The span of received times one partition of webhook_events holds: whole hours or
    #: days ("6h", "1d", "7d"), aligned to UTC multiples of it counted from the epoch.
    partition_interval: timedelta = timedelta(days=1)
    #: Intervals created ahead of the one holding now (by the sweeper and `outbox migrate`).
    partitions_ahead: int = Field(default=3, ge=1, le=366)

    # --- processors ---
    #: `module:function` returning the dispatch table; tests and drills name their own.
    handler_table: str = Field(default="domain.handlers:handler_table", pattern=r"^[\w.]+:\w+$")
    #: `outbox worker` defaults: Dramatiq worker processes, and threads in each. Few
    #: threads: applying events is Python work under one GIL, and a thread that waits for
    #: work lets due rows gather into a larger batch (at 200 webhooks/s, 2 threads gave
    #: p99 104 ms, 8 gave 268 ms, with more CPU per event). Scale with processes.
    worker_processes: int = Field(default=2, ge=1, le=64)
    worker_threads: int = Field(default=2, ge=1, le=256)
    #: Port `outbox worker` and `outbox sweep` serve Prometheus metrics on (None: none),
    #: and the address they listen on.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"

    # --- operator CLI (outbox events / purge / reconcile) ---
    #: Events per second a bulk `outbox events replay` puts back, unless --rate says otherwise.
    replay_rate: float = Field(default=20.0, gt=0)

    # --- operator console (outbox/console) ---
    #: The token an operator signs in to `outbox console` with; without it the console
    #: does not start. Its sessions are signed with a key derived from it.
    console_token: SecretStr | None = None

    log_level: str = "INFO"

    # --- traces (outbox/tracing.py): the standard OpenTelemetry variables we act on; the
    # SDK reads the others (sampler, headers, resource attributes) itself.
    otel_sdk_disabled: bool = False
    #: `otlp` (over HTTP) or `console`; unset with no OTLP endpoint either: no traces.
    otel_traces_exporter: str | None = None
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_service_name: str | None = None

    # --- GitHub pull-request jobs and usage reporting ---
    #: Head branches of PR jobs are "<prefix>/job-<id>-<digest>"; onboarding "<prefix>/onboarding".
    github_branch_prefix: str = Field(default="outbox", min_length=1, max_length=64)
    #: Open an onboarding pull request in each repository the App is installed on (free).
    onboarding_pr_enabled: bool = False
    onboarding_pr_path: str = Field(default=".github/outbox.yml", min_length=1)
    onboarding_pr_content: str = "# Configuration for the outbox GitHub App.\nenabled: true\n"
    onboarding_pr_title: str = "Configure the outbox GitHub App"
    onboarding_pr_body: str = (
        "This pull request adds the App's configuration file. Merge it to start, "
        "or close it to keep the defaults."
    )

    @field_validator("partition_interval", mode="before")
    @classmethod
    def _interval(cls, value: object) -> object:
        return parse_partition_interval(value) if isinstance(value, str) else value

    @field_validator("partition_interval")
    @classmethod
    def _whole_hours(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=1) or value % timedelta(hours=1):
            raise ValueError("a partition interval is whole hours or days (6h, 1d, 7d)")
        return value

    @field_validator("stripe_mode", mode="before")
    @classmethod
    def _lower_mode(cls, value: object) -> object:
        return value.lower().strip() if isinstance(value, str) else value

    @property
    def github_secrets(self) -> tuple[str, ...]:
        return split_secrets(self.github_webhook_secret)

    @property
    def stripe_secrets(self) -> tuple[str, ...]:
        return split_secrets(self.stripe_webhook_secret)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def github_private_key(self) -> str | None:
        """The App's PEM key, from the variable or else from the file it names."""
        if self.github_app_private_key is not None:
            return self.github_app_private_key.get_secret_value()
        if self.github_app_private_key_file is not None:
            return self.github_app_private_key_file.read_text()
        return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
