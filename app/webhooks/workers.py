"""The background work of webhooks in a server process: the fan-out follower and the sender."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from app.core.clock import Clock
from app.core.settings import Settings
from app.events import EventStore
from app.projections.runner import Runner
from app.routing.calendar import WorkCalendar
from app.webhooks.fanout import Fanout
from app.webhooks.sender import Sender
from app.webhooks.service import Webhooks

Worker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def webhook_workers(
    webhooks: Webhooks, store: EventStore, calendar: WorkCalendar, settings: Settings, clock: Clock
) -> list[Worker]:
    fanout = Fanout(store, calendar, settings.tz, settings.webhook_retry_schedule, clock, wake=webhooks.wake)
    runner = Runner(webhooks.db, store, fanout, clock, window_seconds=settings.follower_window_ms / 1000)
    sender = Sender(webhooks.db, webhooks, settings, clock)
    poll = settings.webhook_poll_ms / 1000

    async def fan_out(stop: asyncio.Event) -> None:
        await runner.run(stop, poll)

    return [fan_out, sender.run]
