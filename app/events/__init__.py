"""The event store: one append-only log of every change (see `store.py`)."""

from app.events.registry import EventRegistry, registry
from app.events.store import (
    ConcurrencyConflict,
    EventIdConflict,
    EventStore,
    NewEvent,
    RecordedEvent,
    Write,
)

__all__ = [
    "ConcurrencyConflict",
    "EventIdConflict",
    "EventRegistry",
    "EventStore",
    "NewEvent",
    "RecordedEvent",
    "Write",
    "registry",
]
