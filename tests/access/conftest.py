"""Access tests reach webhook receivers on 127.0.0.1 (subscriptions are part of every scope)."""

from __future__ import annotations

import pytest

from app.core.settings import Settings
from tests.conftest import ADMIN_KEY


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        database_url=db_url,
        environment="test",
        admin_api_key=ADMIN_KEY,  # type: ignore[arg-type]
        sequencer_poll_ms=5,
        scheduler_interval_seconds=0,
        db_pool_size=20,
        db_max_overflow=20,
        webhook_allowed_targets=["127.0.0.1"],
    )
