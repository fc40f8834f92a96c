"""The background loop that keeps positions assigned on PostgreSQL (see `EventStore.sequence`).

Several processes may run it; the sequencer row's SKIP LOCKED makes all but one a no-op at any
moment. A process that appends wakes its own loop at once; others poll.
"""

from __future__ import annotations

import asyncio
import logging

from app.events.store import EventStore

log = logging.getLogger(__name__)


async def run_sequencer(
    store: EventStore, stop: asyncio.Event, poll_seconds: float, gather_seconds: float = 0.003
) -> None:
    """`gather_seconds`: after an append wakes it, the loop waits this long so that one pass
    numbers the appends of a few milliseconds together (one statement for many events)."""
    batch = 10_000
    while not stop.is_set():
        try:
            assigned = await store.sequence(batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sequencer pass failed; retrying")
            await asyncio.sleep(min(1.0, poll_seconds * 10))
            continue
        if assigned >= batch:
            continue
        if await store.wait_appended(poll_seconds):
            await asyncio.sleep(gather_seconds)
