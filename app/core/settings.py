"""Configuration: one pydantic-settings class, read from the environment.

The names of section 7 of the specification (`DATABASE_URL`, `ADMIN_API_KEY`,
`WEBHOOK_ALLOWED_TARGETS`, `WEBHOOK_RETRY_SCHEDULE`, `OPEN311_PUBLIC_READ`) are fixed; the rest
may grow. Unsafe values are refused outside development.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/dispatchroom.db"
# Standard Webhooks' example schedule, stretched to about three days (seconds between attempts).
DEFAULT_RETRY_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000, 50400, 72000)
# Requests per key: what production uses when RATE_LIMITS is unset (development and test: none).
DEFAULT_PRODUCTION_RATE_LIMITS = "*=1200/60"
RATE_LIMIT_ROLES = ("portal", "handler", "dispatcher", "commander", "admin", "viewer", "*")


@dataclass(frozen=True)
class RateLimit:
    """At most `quota` requests per `window` seconds (a token bucket: a full bucket allows a
    burst of `quota`, refilled at quota/window per second)."""

    quota: int
    window: int


def parse_rate_limits(value: str) -> dict[str, RateLimit]:
    """`portal=600/60,*=1200/60` → {role: RateLimit}; `off` or empty → {} (no limits)."""
    table: dict[str, RateLimit] = {}
    if value.strip().lower() in ("", "off", "none"):
        return table
    for part in value.split(","):
        role, sep, spec = part.strip().partition("=")
        quota, slash, window = spec.strip().partition("/")
        role = role.strip()
        if not sep or not slash or not quota.strip().isdigit() or not window.strip().isdigit():
            raise ValueError(f"RATE_LIMITS: {part.strip()!r} is not role=requests/seconds")
        if role not in RATE_LIMIT_ROLES:
            raise ValueError(f"RATE_LIMITS: unknown role {role!r} (one of {', '.join(RATE_LIMIT_ROLES)})")
        limit = RateLimit(int(quota), int(window))
        if limit.quota < 1 or limit.window < 1:
            raise ValueError(f"RATE_LIMITS: {part.strip()!r} needs at least 1 request per 1 second")
        table[role] = limit
    return table


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    environment: Literal["development", "test", "production"] = Field(
        "development", description="`production` refuses unsafe defaults."
    )
    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL of the database.")
    db_pool_size: int = Field(10, ge=1, le=200)
    db_max_overflow: int = Field(10, ge=0, le=200)
    db_prepared_statements: bool = Field(
        True,
        description="Cache prepared statements per connection (PostgreSQL). `false` behind a pooler in "
        "transaction mode that does not track them (PgBouncer before 1.21, or without "
        "max_prepared_statements): statements are then prepared unnamed, each time.",
    )
    db_statement_timeout_ms: int = Field(30_000, ge=0, description="PostgreSQL statement timeout.")
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"

    admin_api_key: SecretStr | None = Field(
        None, description="If set, an admin key with exactly this value exists after start-up."
    )
    city_timezone: str = Field("Asia/Shanghai", description="Time zone of business dates.")
    city_name: str = "长春市"

    background: bool = Field(
        True, description="Run background work (sequencer, followers, scheduler) in this process."
    )
    sequencer_poll_ms: int = Field(25, ge=1, le=10_000)
    follower_window_ms: int = Field(
        200,
        ge=0,
        le=10_000,
        description="After new events wake a follower (history, webhook fan-out), it waits this long "
        "so that one batch takes the events of the window together: fewer, larger transactions under "
        "load, at the price of this much lag.",
    )
    rebuild_processes: int = Field(
        0,
        ge=0,
        le=64,
        description="Processes that fold a large rebuild in parallel on PostgreSQL, each a range of "
        "streams (0: one per CPU; 1: fold in the rebuilding process).",
    )
    prepare_periods_seconds: float = Field(
        600,
        ge=0,
        le=86_400,
        description="Seconds between background passes that compute the closed periods' figures "
        "(the last ten-day periods, months and quarters, for the city and each district) before "
        "anyone asks; each is computed once for every process (0: only when asked).",
    )
    scheduler_interval_seconds: float = Field(
        60,
        ge=0,
        le=86_400,
        description="Seconds between runs of the automatic actions in this process (0: none; "
        "see `dispatchroom tick`).",
    )
    routing_refresh_seconds: float = Field(
        1,
        ge=0,
        le=3600,
        description="How long a process may use its cached routing rules and calendar overrides "
        "before checking whether another process changed them.",
    )
    import_settle_seconds: float = Field(
        600,
        ge=0,
        description="Automatic actions leave a problem alone while its latest event was imported "
        "(occurred_at) less than this long ago, so that an import can finish its history first.",
    )
    clock_offset_seconds: int = Field(
        0, description="Tests only: this process's clock runs this far ahead (refused in production)."
    )

    webhook_allowed_targets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts or CIDRs that webhooks may reach although private or loopback.",
    )
    webhook_retry_schedule: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE),
        description="Seconds between delivery attempts.",
    )
    webhook_disable_after_seconds: int = Field(
        5 * 86_400,
        ge=1,
        description="An endpoint that has failed every delivery for this long is disabled.",
    )
    webhook_connect_timeout_seconds: float = Field(5.0, gt=0, le=60)
    webhook_timeout_seconds: float = Field(15.0, gt=0, le=120, description="Total time per attempt.")
    webhook_concurrency: int = Field(32, ge=1, le=1000, description="Attempts in flight per process.")
    webhook_endpoint_concurrency: int = Field(
        8, ge=1, le=1000, description="Attempts in flight per endpoint and process."
    )
    webhook_poll_ms: int = Field(250, ge=5, le=60_000, description="How often senders look for due work.")
    webhook_secret_grace_seconds: int = Field(
        86_400, ge=0, le=30 * 86_400, description="How long a rotated secret keeps signing."
    )
    webhook_log_retention_days: int = Field(
        30, ge=1, description="Finished deliveries (and their attempts) are kept this long."
    )
    open311_public_read: bool = True
    open311_jurisdiction_id: str = "changchun.gov.cn"

    ranking_target: float = Field(
        0.8, ge=0, le=1, description="Target score of unit rankings (Bijie warnings, Jiangshan classes)."
    )
    ranking_ahead_margin: float = Field(
        0.1, ge=0, le=1, description="A unit is `ahead` at a score of at least target + margin."
    )

    rate_limits: str | None = Field(
        None,
        description="Requests per API key and window, per role: `role=requests/seconds`, comma "
        "separated, `*` for the roles not named (e.g. `portal=600/60,*=1200/60`); `off`: none. "
        f"Unset: none in development and test, `{DEFAULT_PRODUCTION_RATE_LIMITS}` in production. "
        "Counted per server process.",
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins (`https://portal.example.gov.cn`, comma separated; `*`: any) whose "
        "browser pages may call the API. Empty (the default): no cross-origin access.",
    )

    max_request_bytes: int = Field(1_048_576, ge=1024)
    max_import_bytes: int = Field(
        268_435_456, ge=1024, description="Largest ledger accepted by `POST /v1/imports`."
    )
    log_level: str = "info"

    @field_validator("webhook_allowed_targets", mode="before")
    @classmethod
    def _targets(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate_limits(value)
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _schedule(cls, value: object) -> object:
        parts = _split_commas(value)
        if isinstance(parts, list) and not parts:
            raise ValueError("WEBHOOK_RETRY_SCHEDULE needs at least one number of seconds")
        return parts

    @field_validator("city_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.environment == "production":
            key = self.admin_api_key.get_secret_value() if self.admin_api_key else None
            if key is not None and len(key) < 32:
                raise ValueError("ADMIN_API_KEY must be at least 32 characters in production")
            if self.database_url == DEFAULT_DATABASE_URL:
                raise ValueError("set DATABASE_URL explicitly in production")
            if self.clock_offset_seconds:
                raise ValueError("CLOCK_OFFSET_SECONDS is for tests; it is refused in production")
        if any(s < 0 for s in self.webhook_retry_schedule):
            raise ValueError("WEBHOOK_RETRY_SCHEDULE values must not be negative")
        return self

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.city_timezone)

    @cached_property
    def rate_limit_table(self) -> dict[str, RateLimit]:
        """The limit of each role (`*`: the others); empty: no limits."""
        if self.rate_limits is None:
            return parse_rate_limits(
                DEFAULT_PRODUCTION_RATE_LIMITS if self.environment == "production" else ""
            )
        return parse_rate_limits(self.rate_limits)

    @property
    def retry_delays(self) -> list[timedelta]:
        return [timedelta(seconds=s) for s in self.webhook_retry_schedule]
