"""Schemathesis against `/openapi.json` of a real server process, on SQLite and on PostgreSQL.

Every operation gets a bounded number of generated requests, valid and invalid (including the
admin key, so that requests reach the handlers rather than stopping at 401). Checked: no 5xx,
every response matches its documented status codes, headers and schema, and every error outside
Open311 is problem+json with a registered code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from app.core.errors import CATALOGUE, PROBLEM_JSON
from app.core.settings import Settings
from app.main import create_app
from tests.conftest import ADMIN_KEY
from tests.reliability.databases import BACKENDS, fresh_database
from tests.server import server

pytestmark = pytest.mark.slow
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "8"))
# Endless responses (the SSE stream) are not something a generated request can wait for.
SKIPPED_PATHS = ["/v1/events/stream"]


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with fresh_database(request.param, folder) as url:
        env = {
            "DATABASE_URL": url,
            "ADMIN_API_KEY": ADMIN_KEY,
            "ENVIRONMENT": "test",
            "SERVER_LOG": str(folder / "server.log"),
        }
        with server(env, "--demo") as base:
            yield base


def _schema() -> schemathesis.BaseSchema:
    """The document the servers publish (built by the same code, without a database)."""
    document = create_app(Settings(environment="test")).openapi()
    config = schemathesis.Config.from_dict(
        {
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
            "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
            # Valid by the schema is not valid by the domain (an unknown enterprise, `to` before
            # `from`, a stale cursor): a 4xx for a schema-valid request is not a failure here.
            # Invalid requests must not 5xx and must answer as documented (checked), but a few
            # are accepted on purpose: pydantic's lax parsing reads a number as a Unix time in
            # date parameters, and a repeated query parameter counts once (its last value).
            "checks": {
                "positive_data_acceptance": {"enabled": False},
                "negative_data_rejection": {"enabled": False},
            },
            "headers": {"Authorization": f"Bearer {ADMIN_KEY}"},
            "request-timeout": 30,
        }
    )
    return schemathesis.openapi.from_dict(document, config=config).exclude(path=SKIPPED_PATHS)


schema = _schema()


@schemathesis.check
def errors_are_problem_json(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """Outside Open311, every 4xx and 5xx is problem+json with a registered `code` and the status."""
    if response.status_code < 400 or case.operation.path.startswith("/open311/"):
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith(PROBLEM_JSON), f"{response.status_code} as {content_type}"
    doc = response.json()
    assert doc["status"] == response.status_code, doc
    assert doc["code"] in CATALOGUE and CATALOGUE[doc["code"]].status == response.status_code, doc
    return True


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=MAX_EXAMPLES)
def test_every_operation_answers_as_documented(case: schemathesis.Case, fuzz_server: str) -> None:
    case.call_and_validate(base_url=fuzz_server, additional_checks=[errors_are_problem_json])
