"""The payloads in the OpenAPI document (its `webhooks` section), one operation per event type,
so that integrators can generate receivers: the body schema, the three Standard Webhooks
headers, and what each answer means."""

from __future__ import annotations

import inspect
from typing import Any, Literal

from fastapi import FastAPI, Header
from pydantic import BaseModel, Field, create_model

from app.problems.domain import EVENT_DESCRIPTIONS
from app.webhooks.schemas import PING, PROBLEM_EVENT_TYPES, PingPayload, ProblemEventPayload

HEADERS_HELP = """
Verify every request before trusting it (Standard Webhooks v1; the `standardwebhooks` libraries do
all of this): compute `base64(HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{raw body}"))`
with the bytes of the secret after `whsec_` (base64-decoded), compare it in constant time with
each `v1,` entry of `webhook-signature`, and reject timestamps more than 5 minutes away. Use
`webhook-id` to drop duplicates: delivery is at least once.

Answer 2xx quickly (within 15 s) once the message is stored. 410 Gone disables the subscription;
anything else, a redirect or no answer is retried with backoff for about three days.
"""

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Received (any 2xx)."},
    410: {"description": "Gone: stop sending; the subscription is disabled."},
    "default": {"description": "Anything else (or no answer within 15 s) is retried."},
}


def _header(alias: str, description: str) -> Any:
    return Header(alias=alias, description=description)


def _signature(model: type[BaseModel]) -> inspect.Signature:
    p = inspect.Parameter
    kind = p.POSITIONAL_OR_KEYWORD
    return inspect.Signature(
        [
            p("body", kind, annotation=model),
            p(
                "webhook_id",
                kind,
                annotation=str,
                default=_header("webhook-id", "The message id: the same on every retry (deduplicate on it)."),
            ),
            p(
                "webhook_timestamp",
                kind,
                annotation=int,
                default=_header("webhook-timestamp", "Unix seconds of this attempt."),
            ),
            p(
                "webhook_signature",
                kind,
                annotation=str,
                default=_header(
                    "webhook-signature",
                    "Space-separated `v1,<base64>` signatures (two while a rotated secret is in its grace "
                    "period).",
                ),
            ),
        ],
        return_annotation=None,
    )


def _document(app: FastAPI, name: str, model: type[BaseModel], description: str) -> None:
    def receiver(**_: Any) -> None:  # documentation only; never called
        return None

    receiver.__signature__ = _signature(model)  # type: ignore[attr-defined]
    app.webhooks.add_api_route(
        name,
        receiver,
        methods=["POST"],
        summary=name,
        description=description + "\n" + HEADERS_HELP,
        operation_id=f"webhook_{name.replace('.', '_')}",
        responses=RESPONSES,
        tags=["webhooks"],
    )


def document_webhooks(app: FastAPI) -> None:
    for name in PROBLEM_EVENT_TYPES:
        camel = "".join(part.capitalize() for part in name.replace(".", "_").split("_"))
        model = create_model(
            f"{camel}Payload",
            __base__=ProblemEventPayload,
            type=(Literal[name], Field(description="The event type.")),  # type: ignore[arg-type]
        )
        _document(app, name, model, EVENT_DESCRIPTIONS[name])
    _document(app, PING, PingPayload, "A test sent by `POST /v1/webhooks/{id}/test`.")
