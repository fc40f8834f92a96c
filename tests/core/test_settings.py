"""Settings that only tests may use are refused in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.settings import Settings


def test_a_shifted_clock_is_refused_in_production() -> None:
    production = {"environment": "production", "database_url": "postgresql+asyncpg://db/dispatchroom"}
    assert Settings(**production).clock_offset_seconds == 0
    with pytest.raises(ValidationError, match="CLOCK_OFFSET_SECONDS"):
        Settings(**production, clock_offset_seconds=86_400)
    assert Settings(environment="test", clock_offset_seconds=86_400).clock_offset_seconds == 86_400
