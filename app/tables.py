"""Imports every module that defines tables, so that `app.core.db.metadata` is complete
(Alembic and the drift test read it)."""

from app.core import security
from app.directory import tables as directory_tables
from app.events import tables as event_tables
from app.projections import history, problem_view, runner, settled, tallies
from app.webhooks import tables as webhook_tables

__all__ = [
    "directory_tables",
    "event_tables",
    "history",
    "problem_view",
    "runner",
    "security",
    "settled",
    "tallies",
    "webhook_tables",
]
