"""`/v1/webhooks`: subscriptions, the delivery log, redelivery, tests, secret rotation."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from app.core.deps import CallerDep, MetaDep, SettingsDep
from app.core.errors import responses
from app.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from app.webhooks.schemas import DeliveryOut, RotateIn, WebhookCreated, WebhookIn, WebhookOut, WebhookPatch
from app.webhooks.service import Webhooks, delivery_out, webhook_out

router = APIRouter(prefix="/v1", tags=["webhooks"])


async def get_webhooks(request: Request) -> Webhooks:
    webhooks: Webhooks = request.app.state.webhooks
    return webhooks


WebhooksDep = Annotated[Webhooks, Depends(get_webhooks)]
WebhookId = Annotated[str, Path(max_length=40, description="The subscription's id (`wh_…`).")]
DeliveryId = Annotated[str, Path(max_length=40, description="The delivery's id, its `webhook-id` (`msg_…`).")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


@router.post(
    "/webhooks",
    operation_id="create_webhook",
    summary="Subscribe to problem events",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    responses=responses(401, 403, 422),
)
async def create_webhook(
    body: WebhookIn,
    caller: CallerDep,
    meta: MetaDep,
    webhooks: WebhooksDep,
    settings: SettingsDep,
    response: Response,
) -> WebhookCreated:
    """Deliveries are signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`,
    `webhook-signature`) with the `secret` of the response, which is shown only here: store it.

    Admins and commanders subscribe anywhere (without `unit_id`: every problem); a dispatcher
    names a unit of its district; a handler key subscribes within its own unit and the units
    below it (default: its own unit). The URL must reach a public address (422
    `webhook_target_refused` otherwise). The payloads are documented under *Webhooks* below."""
    row, secret = await webhooks.create(caller, body, meta)
    response.headers["Location"] = f"/v1/webhooks/{row.id}"
    return WebhookCreated(**webhook_out(row, settings.tz).model_dump(), secret=secret)


@router.get(
    "/webhooks",
    operation_id="list_webhooks",
    summary="List webhook subscriptions",
    response_model=Page[WebhookOut],
    responses=responses(400, 401, 403),
)
async def list_webhooks(
    caller: CallerDep,
    webhooks: WebhooksDep,
    settings: SettingsDep,
    enabled: Annotated[bool | None, Query(description="`false`: the disabled ones.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Page[WebhookOut]:
    """The subscriptions within the key's scope, oldest first. A disabled one shows
    `enabled: false` and its `disabled_reason`."""
    rows, next_cursor = await webhooks.search(caller, enabled=enabled, limit=limit, cursor=cursor)
    return Page(items=[webhook_out(r, settings.tz) for r in rows], next_cursor=next_cursor)


@router.get(
    "/webhooks/{webhook_id}",
    operation_id="get_webhook",
    summary="Get a webhook subscription",
    response_model=WebhookOut,
    responses=responses(401, 403, 404),
)
async def get_webhook(
    webhook_id: WebhookId, caller: CallerDep, webhooks: WebhooksDep, settings: SettingsDep
) -> WebhookOut:
    """The subscription without its secret (`secret_fingerprint` tells secrets apart). A disabled
    one shows `enabled: false`, `disabled_reason` and `disabled_at`."""
    return webhook_out(await webhooks.get(caller, webhook_id), settings.tz)


@router.patch(
    "/webhooks/{webhook_id}",
    operation_id="update_webhook",
    summary="Change a webhook subscription",
    response_model=WebhookOut,
    responses=responses(401, 403, 404, 409, 422),
)
async def update_webhook(
    webhook_id: WebhookId,
    body: WebhookPatch,
    caller: CallerDep,
    meta: MetaDep,
    webhooks: WebhooksDep,
    settings: SettingsDep,
) -> WebhookOut:
    """Only the fields given change. `enabled: true` re-enables a disabled subscription (events
    of the time it was disabled are not sent; redeliver them from the log if needed)."""
    return webhook_out(await webhooks.update(caller, webhook_id, body, meta), settings.tz)


@router.delete(
    "/webhooks/{webhook_id}",
    operation_id="delete_webhook",
    summary="Delete a webhook subscription",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=responses(401, 403, 404, 409),
)
async def delete_webhook(
    webhook_id: WebhookId, caller: CallerDep, meta: MetaDep, webhooks: WebhooksDep
) -> None:
    """The subscription and its delivery log go; the events recording it stay."""
    await webhooks.delete(caller, webhook_id, meta)


@router.post(
    "/webhooks/{webhook_id}/rotate-secret",
    operation_id="rotate_webhook_secret",
    summary="Rotate the signing secret",
    response_model=WebhookCreated,
    responses=responses(401, 403, 404, 409, 422),
)
async def rotate_webhook_secret(
    webhook_id: WebhookId,
    caller: CallerDep,
    meta: MetaDep,
    webhooks: WebhooksDep,
    settings: SettingsDep,
    body: RotateIn | None = None,
) -> WebhookCreated:
    """A new secret, shown once. Until `previous_secret_expires_at` every delivery carries two
    signatures in `webhook-signature`, one per secret, so receivers can switch at their pace."""
    row, secret = await webhooks.rotate_secret(caller, webhook_id, body or RotateIn(), meta)
    return WebhookCreated(**webhook_out(row, settings.tz).model_dump(), secret=secret)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    operation_id="list_webhook_deliveries",
    summary="The delivery log",
    response_model=Page[DeliveryOut],
    responses=responses(400, 401, 403, 404),
)
async def list_webhook_deliveries(
    webhook_id: WebhookId,
    caller: CallerDep,
    webhooks: WebhooksDep,
    settings: SettingsDep,
    delivery_status: Annotated[
        Literal["pending", "delivered", "failed", "notice"] | None, Query(alias="status")
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Page[DeliveryOut]:
    """Newest first: each delivery with its attempts (time, status code, latency, the start of
    the response, the next retry). `notice` entries record what happened to the subscription
    (`webhook.disabled`)."""
    rows, attempts, next_cursor = await webhooks.deliveries(
        caller, webhook_id, status=delivery_status, limit=limit, cursor=cursor
    )
    return Page(
        items=[delivery_out(r, attempts.get(r.id, []), settings.tz) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}",
    operation_id="get_webhook_delivery",
    summary="One delivery with its attempts",
    response_model=DeliveryOut,
    responses=responses(401, 403, 404),
)
async def get_webhook_delivery(
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
    caller: CallerDep,
    webhooks: WebhooksDep,
    settings: SettingsDep,
) -> DeliveryOut:
    """The delivery's status, next retry and latest attempts (newest first)."""
    row, attempts = await webhooks.delivery(caller, webhook_id, delivery_id)
    return delivery_out(row, attempts, settings.tz)


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
    operation_id="retry_webhook_delivery",
    summary="Send a delivery again",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryOut,
    responses=responses(401, 403, 404, 409),
)
async def retry_webhook_delivery(
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
    caller: CallerDep,
    meta: MetaDep,
    webhooks: WebhooksDep,
    settings: SettingsDep,
) -> DeliveryOut:
    """Queues the delivery now, with the same `webhook-id` and body, and a fresh round of
    retries (delivered ones too: a manual replay). Recorded as `webhook.redelivery_requested`."""
    row, attempts = await webhooks.redeliver(caller, webhook_id, delivery_id, meta)
    return delivery_out(row, attempts, settings.tz)


@router.post(
    "/webhooks/{webhook_id}/test",
    operation_id="test_webhook",
    summary="Send a test ping",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryOut,
    responses=responses(401, 403, 404, 409),
)
async def test_webhook(
    webhook_id: WebhookId, caller: CallerDep, webhooks: WebhooksDep, settings: SettingsDep
) -> DeliveryOut:
    """Queues a signed `webhook.ping` for the endpoint; follow it in the delivery log."""
    row, attempts = await webhooks.ping(caller, webhook_id)
    return delivery_out(row, attempts, settings.tz)
