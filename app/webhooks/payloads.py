"""The bytes a receiver gets: `{type, timestamp, data: {event_id, position, problem_id, problem,
event}}` (SPEC §8). Built once per event by the fan-out and stored, so that every retry sends
exactly the same body."""

from __future__ import annotations

from datetime import datetime, tzinfo
from types import SimpleNamespace
from typing import Any

from app.events import RecordedEvent
from app.problems.domain import ProblemState
from app.problems.projection import view_row
from app.projections.problem_view import to_api
from app.routing.calendar import WorkCalendar
from app.webhooks.schemas import (
    PING,
    SUMMARY_FIELDS,
    EventInfo,
    PingData,
    PingPayload,
    ProblemEventData,
    ProblemEventPayload,
    ProblemSummary,
)

# What of an event's metadata a receiver sees (not request hashes or idempotency keys).
PUBLIC_METADATA = ("actor", "actor_name", "role", "unit", "district", "source", "correlation_id", "imported")


def problem_summary(state: ProblemState, at: datetime, calendar: WorkCalendar, tz: tzinfo) -> ProblemSummary:
    out = to_api(SimpleNamespace(**view_row(state)), at, calendar, tz=tz)
    return ProblemSummary.model_validate(out.model_dump(include=set(SUMMARY_FIELDS)))


def problem_event_body(
    event: RecordedEvent, problem_id: str, state: ProblemState, calendar: WorkCalendar, tz: tzinfo
) -> str:
    assert event.position is not None
    metadata: dict[str, Any] = {k: event.metadata[k] for k in PUBLIC_METADATA if k in event.metadata}
    payload = ProblemEventPayload(
        type=event.type,
        timestamp=event.occurred_at.astimezone(tz),
        data=ProblemEventData(
            event_id=event.event_id,
            position=event.position,
            problem_id=problem_id,
            problem=problem_summary(state, event.occurred_at, calendar, tz),
            event=EventInfo(
                event_id=event.event_id,
                type=event.type,
                version=event.stream_version,
                position=event.position,
                occurred_at=event.occurred_at.astimezone(tz),
                recorded_at=event.recorded_at.astimezone(tz),
                data=event.data,
                metadata=metadata,
            ),
        ),
    )
    return payload.model_dump_json()


def ping_body(webhook_id: str, now: datetime, tz: tzinfo) -> str:
    return PingPayload(
        type=PING,
        timestamp=now.astimezone(tz),
        data=PingData(webhook_id=webhook_id, message="Dispatchroom webhook test"),
    ).model_dump_json()
