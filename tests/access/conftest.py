"""Access tests reach webhook receivers on 127.0.0.1 (subscriptions are part of every scope)."""

from __future__ import annotations

import pytest

from app.core.settings import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allowed_targets": ["127.0.0.1"]})
