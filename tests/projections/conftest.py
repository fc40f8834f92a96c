"""The small city of `tests/factories.py`, for every test of this package that needs one."""

from __future__ import annotations

import pytest

from app.main import Services
from tests.factories import City, build_city


@pytest.fixture
async def city(services: Services) -> City:
    return await build_city(services)
