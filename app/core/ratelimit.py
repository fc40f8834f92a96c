"""Rate limits per API key, and the headers that announce them.

Each key has a token bucket in this process: `quota` requests fill it, it refills at
quota/window per second, every authenticated request takes one token, and a request that finds
less than one is refused with 429 `rate_limited`. The limits are per role (`RATE_LIMITS`); with
N server processes a key may make up to N times its quota (each process counts its own), which
the documentation says. The buckets live in memory: the authentication of a request already
costs one indexed read, and a shared counter would add a write to every request.

Responses carry the headers of draft-ietf-httpapi-ratelimit-headers (structured fields):
`RateLimit-Policy: "handler";q=600;w=60` (the policy: quota and window in seconds) and
`RateLimit: "handler";r=598;t=1` (the requests remaining and the seconds until the bucket is full
again); a 429 adds `Retry-After` (seconds until the next request will be allowed).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from app.core.clock import Clock
from app.core.errors import AppError
from app.core.settings import RateLimit

STATE_KEY = "rate_limit_headers"  # where a request's headers wait for the response (scope state)


@dataclass(frozen=True)
class Decision:
    policy: str
    limit: RateLimit
    allowed: bool
    remaining: int
    reset_seconds: int
    retry_after: int

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit.quota};w={self.limit.window}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset_seconds}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    """Token buckets per key id, limited per role (`*`: every role not named)."""

    def __init__(self, limits: dict[str, RateLimit], clock: Clock) -> None:
        self.limits = dict(limits)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.limits)

    def take(self, key_id: str, role: str) -> Decision | None:
        """Take one request from the key's bucket; None when its role has no limit."""
        limit = self.limits.get(role) or self.limits.get("*")
        if limit is None:
            return None
        rate = limit.quota / limit.window  # tokens per second
        now = self.clock.now().timestamp()
        with self._lock:
            tokens, at = self._buckets.get(key_id, (float(limit.quota), now))
            tokens = min(float(limit.quota), tokens + max(0.0, now - at) * rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key_id] = (tokens, now)
        return Decision(
            policy=role if role in self.limits else "default",
            limit=limit,
            allowed=allowed,
            remaining=int(tokens),
            reset_seconds=math.ceil((limit.quota - tokens) / rate),
            retry_after=0 if allowed else max(1, math.ceil((1.0 - tokens) / rate)),
        )

    def check(self, state: Any, key_id: str, role: str) -> None:
        """Count a request of the key; its headers go on the response (through `state`, the
        request's scope state), and over the limit it is refused with 429."""
        decision = self.take(key_id, role)
        if decision is None:
            return
        headers = decision.headers()
        state[STATE_KEY] = headers
        if not decision.allowed:
            raise AppError(
                "rate_limited",
                f"this key may make {decision.limit.quota} requests per {decision.limit.window} s; "
                f"retry in {decision.retry_after} s",
                headers=headers,
            )
