"""Event types and upcasting.

Each type has a current schema version. Events are stored with the version they were written
in and upcast on read, one step at a time, so readers only ever see the current schema.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class EventType:
    name: str
    version: int
    description: str


class EventRegistry:
    def __init__(self) -> None:
        self.types: dict[str, EventType] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, name: str, description: str, version: int = 1) -> str:
        existing = self.types.get(name)
        if existing and existing.version != version:
            raise ValueError(f"{name} registered twice with different versions")
        self.types[name] = EventType(name, version, description)
        return name

    def upcaster(self, name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register the step from `from_version` to `from_version + 1` of `name`."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[(name, from_version)] = fn
            return fn

        return decorate

    def current_version(self, name: str) -> int:
        known = self.types.get(name)
        return known.version if known else 1

    def upcast(self, name: str, version: int, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        target = self.current_version(name)
        while version < target:
            step = self._upcasters.get((name, version))
            if step is None:
                raise LookupError(f"no upcaster for {name} v{version} → v{version + 1}")
            data = step(dict(data))
            version += 1
        return version, data


registry = EventRegistry()
