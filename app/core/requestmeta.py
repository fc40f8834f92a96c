"""What every event records about the request that caused it (SPEC §4 metadata)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.security import Caller


@dataclass(frozen=True)
class RequestMeta:
    request_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None


def event_metadata(caller: Caller, meta: RequestMeta | None = None, **extra: Any) -> dict[str, Any]:
    meta = meta or RequestMeta()
    data: dict[str, Any] = {
        "actor": caller.key_id,
        "actor_name": caller.name,
        "role": caller.role.value if caller.role else "system",
        "unit": caller.unit_id,
        "district": caller.district_id,
        "source": caller.source,
        "request_id": meta.request_id,
        "correlation_id": meta.correlation_id or meta.request_id,
        "causation_id": meta.causation_id,
    }
    data.update(extra)
    return {k: v for k, v in data.items() if v is not None}
