"""Per-process caches of small read models that every command consults (the routing rules, the
calendar overrides), kept correct across processes.

A cache is reloaded when its stream's version moves. The versions of all watched streams are read
in one indexed query, at most once per `interval` seconds however many commands run, so the
command path gains no round trip of its own; a change made by another process is seen within the
interval, and a change made by this process at once (the writer hands its new value over).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from app.events import EventStore

Reload = Callable[[], Awaitable[int]]  # loads the read model into its cache; returns its version


class StreamWatch:
    def __init__(self, store: EventStore, interval_seconds: float) -> None:
        self.store = store
        self.interval = interval_seconds
        self._reloaders: dict[str, Reload] = {}
        self._versions: dict[str, int] = {}
        self._checked = -float("inf")
        self._lock = asyncio.Lock()

    def watch(self, stream_id: str, reload: Reload) -> None:
        self._reloaders[stream_id] = reload

    def seen(self, stream_id: str, version: int) -> None:
        """This process wrote `version` and has updated its cache already."""
        self._versions[stream_id] = max(version, self._versions.get(stream_id, 0))

    async def refresh(self, *, force: bool = False) -> None:
        """Reload every cache whose stream moved (checking at most once per interval)."""
        if not force and time.monotonic() - self._checked < self.interval:
            return
        async with self._lock:
            if not force and time.monotonic() - self._checked < self.interval:
                return  # another coroutine checked while this one waited
            versions = await self.store.stream_versions(list(self._reloaders))
            self._checked = time.monotonic()
            for stream_id, version in versions.items():
                if version != self._versions.get(stream_id):
                    self._versions[stream_id] = await self._reloaders[stream_id]()
