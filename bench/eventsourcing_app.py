"""The peer: the same workload through the `eventsourcing` library's PostgreSQL persistence (the
best-known Python event store), behind FastAPI. Each request creates a `Problem` aggregate and
saves its first event; the library serialises writers with LOCK TABLE … IN EXCLUSIVE MODE."""

from __future__ import annotations

from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from fastapi import FastAPI


class Problem(Aggregate):
    @event("Submitted")
    def __init__(self, enterprise_id: str, category: str, title: str, description: str) -> None:
        self.enterprise_id = enterprise_id
        self.category = category
        self.title = title
        self.description = description
        self.status = "assigned"


class Problems(Application):
    def submit(self, body: dict[str, Any]) -> str:
        problem = Problem(body["enterprise_id"], body["category"], body["title"], body["description"])
        self.save(problem)
        return str(problem.id)


problems = Problems()  # PERSISTENCE_MODULE=eventsourcing.postgres and POSTGRES_* from the environment
app = FastAPI()


@app.post("/problems", status_code=201)
def submit(request_body: dict[str, Any]) -> dict[str, Any]:
    return {"id": problems.submit(request_body)}
