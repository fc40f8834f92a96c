"""Webhook subscriptions, deliveries and payloads as the API and the receivers see them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.core.types import ShortText, Strict, UnitId
from app.problems import domain

# The problem events a subscription may ask for (SPEC §6; the names are those of the log).
PROBLEM_EVENT_TYPES: tuple[str, ...] = (
    domain.SUBMITTED,
    domain.ASSIGNED,
    domain.ACCEPTED,
    domain.ESCALATED,
    domain.RETURNED,
    domain.EXTENSION_REQUESTED,
    domain.EXTENSION_DECIDED,
    domain.DEFERRED,
    domain.REMINDED,
    domain.OVERDUE,
    domain.SUPERVISED,
    domain.RESOLVED,
    domain.FEEDBACK_RECEIVED,
    domain.REOPENED,
    domain.CLOSED,
    domain.WITHDRAWN,
)
ALL_TYPES = "*"
PING: Final = "webhook.ping"

EventTypeName = Literal[
    "*",
    "problem.submitted",
    "problem.assigned",
    "problem.accepted",
    "problem.escalated",
    "problem.returned",
    "problem.extension_requested",
    "problem.extension_decided",
    "problem.deferred",
    "problem.reminded",
    "problem.overdue",
    "problem.supervised",
    "problem.resolved",
    "problem.feedback_received",
    "problem.reopened",
    "problem.closed",
    "problem.withdrawn",
]
WebhookUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=8, max_length=2048),
]
EventTypes = Annotated[list[EventTypeName], Field(min_length=1, max_length=len(PROBLEM_EVENT_TYPES) + 1)]


# -- subscriptions -----------------------------------------------------------------------------


class WebhookIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "url": "https://hooks.example.gov.cn/dispatchroom",
                "event_types": ["problem.assigned", "problem.supervised", "problem.overdue"],
                "unit_id": "220102-utilities",
                "description": "南关区要素保障组的办件系统",
            }
        },
    )

    url: WebhookUrl = Field(description="Where to POST (https recommended); must be publicly routable.")
    event_types: EventTypes = Field(description="Problem event types, or `*` for all of them.")
    unit_id: UnitId | None = Field(
        None,
        description="Only problems this unit (or a unit below it) holds, leads, cooperates on or "
        "reported. A handler key's subscriptions default to its own unit.",
    )
    description: ShortText | None = None
    enabled: bool = True


class WebhookPatch(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"enabled": True}})

    url: WebhookUrl | None = None
    event_types: EventTypes | None = None
    unit_id: UnitId | None = Field(None, description="`null` removes the unit filter (not for handlers).")
    description: ShortText | None = None
    enabled: bool | None = Field(
        None, description="`true` re-enables a disabled subscription (and clears `disabled_reason`)."
    )


class RotateIn(Strict):
    grace_period_seconds: int | None = Field(
        None,
        ge=0,
        le=30 * 86_400,
        description="How long the old secret keeps signing next to the new one "
        "(default `WEBHOOK_SECRET_GRACE_SECONDS`, one day).",
    )


class WebhookOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    unit_id: str | None
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(description="Why it was disabled (null while enabled).")
    disabled_at: datetime | None
    failing_since: datetime | None = Field(
        description="Every attempt has failed since then (null after a success); after "
        "`WEBHOOK_DISABLE_AFTER_SECONDS` (5 days) the subscription is disabled."
    )
    owner_key_id: str = Field(description="The API key that created the subscription.")
    secret_fingerprint: str = Field(description="The first hex digits of the secret's SHA-256.")
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation: until then the old secret signs too."
    )
    created_at: datetime
    updated_at: datetime
    version: int


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="The signing secret (`whsec_` + base64 of 32 random bytes). Shown once; store it now."
    )


# -- the delivery log --------------------------------------------------------------------------


class AttemptOut(BaseModel):
    number: int
    attempted_at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status (null: no answer).")
    latency_ms: int
    response: str | None = Field(description="The start of the response body (at most 1 KiB).")
    error: str | None = Field(description="Why there was no usable answer (timeout, refused, …).")
    outcome: Literal["delivered", "retry", "failed", "gone"]
    next_retry_at: datetime | None
    sender: str = Field(description="The server process that made the attempt.")


class DeliveryOut(BaseModel):
    id: str = Field(description="The `webhook-id` header (the same on every retry).")
    kind: Literal["event", "ping", "notice"] = Field(
        description="`event`: a problem event; `ping`: a test; `notice`: a log entry, not sent "
        "(`webhook.disabled`)."
    )
    event_type: str
    event_id: UUID | None
    position: int | None
    problem_id: str | None
    status: Literal["pending", "delivered", "failed", "notice"]
    attempt_count: int
    next_attempt_at: datetime | None = Field(description="The next retry (pending only).")
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    requested_by: str | None = Field(description="Pings and manual retries: the key that asked.")
    attempts: list[AttemptOut] = Field(description="The latest attempts, newest first (at most 20).")


# -- payloads ----------------------------------------------------------------------------------


class ProblemSummary(BaseModel):
    """The problem as it stood right after the event (aging as of the event). The description
    and the enterprise's contact are left out: fetch `/v1/problems/{id}` for them."""

    id: str
    enterprise_id: str
    enterprise_name: str
    category: str
    title: str
    urgency: str
    source: str | None
    tier: str
    status: str
    lead_unit_id: str | None
    cooperating_unit_ids: list[str]
    holder_unit_id: str | None
    room_unit_id: str | None
    reporter_unit_id: str
    district_id: str
    deadline: datetime | None
    overdue: bool
    age_days: int
    age_working_days: int
    submitted_at: datetime
    resolved_at: datetime | None
    closed_at: datetime | None
    withdrawn_at: datetime | None
    version: int


SUMMARY_FIELDS = frozenset(ProblemSummary.model_fields)


class EventInfo(BaseModel):
    event_id: UUID
    type: str
    version: int = Field(description="The event's number in the problem's stream (1, 2, 3 …).")
    position: int = Field(description="The event's global position in the feed (`/v1/events`).")
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any] = Field(description="The event's data, as `/v1/problems/{id}/events` shows it.")
    metadata: dict[str, Any] = Field(
        description="Who: `actor` (key id), `actor_name`, `role`, `unit`, `district`, `source`, "
        "`correlation_id`."
    )


class ProblemEventData(BaseModel):
    event_id: UUID
    position: int
    problem_id: str
    problem: ProblemSummary
    event: EventInfo


class ProblemEventPayload(BaseModel):
    """The body of every problem event delivery (Standard Webhooks envelope)."""

    type: str = Field(description="The event type, e.g. `problem.assigned`.")
    timestamp: datetime = Field(description="When the event happened (not when it was delivered).")
    data: ProblemEventData


class PingData(BaseModel):
    webhook_id: str
    message: str


class PingPayload(BaseModel):
    """Sent by `POST /v1/webhooks/{id}/test`."""

    type: Literal["webhook.ping"]
    timestamp: datetime
    data: PingData
