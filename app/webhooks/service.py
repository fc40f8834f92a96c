"""Webhook subscriptions: every change is an event on the subscription's stream (`webhook-<id>`)
with the actor, and the `webhook_subscriptions` row is written in the same append.

What is an event here and what is not:

* events: `webhook.created`, `webhook.updated`, `webhook.secret_rotated`, `webhook.deleted`,
  `webhook.redelivery_requested` (someone asked to send problem data again) and
  `webhook.disabled` (the service gave up on an endpoint);
* operational records, not events: deliveries (derived from events by the fan-out), attempts
  (observations of someone else's server), pings. Making them events would feed the log back
  into the follower that reads it, and bury the audit trail under retries.

Secrets never enter the log (portals read the feed): events carry a fingerprint. Scope: admins
and commanders subscribe anywhere; a dispatcher names a unit of its district; a handler key
subscribes within its own unit and the units below it (default: its unit). Outside its scope a
subscription does not exist for a key (404).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta, tzinfo
from typing import Any

import sqlalchemy as sa

from app.core.clock import Clock
from app.core.db import Database
from app.core.errors import AppError, register
from app.core.pagination import decode_cursor, encode_cursor
from app.core.requestmeta import RequestMeta, event_metadata
from app.core.security import SYSTEM, Caller, Role
from app.core.settings import Settings
from app.directory.service import Directory
from app.events import ConcurrencyConflict, EventStore, NewEvent, registry
from app.webhooks.egress import Egress, InvalidTarget, RefusedTarget
from app.webhooks.payloads import ping_body
from app.webhooks.schemas import (
    ALL_TYPES,
    PING,
    PROBLEM_EVENT_TYPES,
    AttemptOut,
    DeliveryOut,
    RotateIn,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
)
from app.webhooks.signing import fingerprint, generate_secret
from app.webhooks.tables import webhook_attempts, webhook_deliveries, webhook_subscriptions

log = logging.getLogger(__name__)

register(
    "invalid_webhook_url",
    422,
    "Invalid webhook URL",
    "The URL must be an absolute http(s) URL with a host, without credentials or fragment.",
)
register(
    "webhook_target_refused",
    422,
    "Webhook target refused",
    "The URL's host does not resolve, or resolves to a private, loopback, link-local or otherwise "
    "non-public address (SSRF protection); an operator may allow it in WEBHOOK_ALLOWED_TARGETS.",
)
register(
    "webhook_disabled",
    409,
    "Webhook disabled",
    "The subscription is disabled; re-enable it (`PATCH` with `enabled: true`) first.",
)

WEBHOOK_CREATED = registry.register("webhook.created", "A webhook subscription was created.")
WEBHOOK_UPDATED = registry.register("webhook.updated", "A webhook subscription was changed.")
WEBHOOK_SECRET_ROTATED = registry.register(
    "webhook.secret_rotated", "A webhook's signing secret was replaced (the old one signs for a while)."
)
WEBHOOK_DELETED = registry.register("webhook.deleted", "A webhook subscription was deleted.")
WEBHOOK_REDELIVERY_REQUESTED = registry.register(
    "webhook.redelivery_requested", "Someone asked for a delivery to be sent again."
)
WEBHOOK_DISABLED = registry.register(
    "webhook.disabled", "The service disabled a webhook whose endpoint answered 410 or kept failing."
)

MANAGERS = (Role.admin, Role.commander, Role.dispatcher, Role.handler)
ATTEMPTS_SHOWN = 20
APPEND_ATTEMPTS = 5
ws = webhook_subscriptions
wd = webhook_deliveries


def stream_id(subscription_id: str) -> str:
    return f"webhook-{subscription_id}"


def _local(value: datetime | None, tz: tzinfo) -> datetime | None:
    return value.astimezone(tz) if value is not None else None


def webhook_out(row: Any, tz: tzinfo) -> WebhookOut:
    return WebhookOut(
        id=row.id,
        url=row.url,
        event_types=list(row.event_types),
        unit_id=row.unit_id,
        description=row.description,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        disabled_at=_local(row.disabled_at, tz),
        failing_since=_local(row.failing_since, tz),
        owner_key_id=row.owner_key_id,
        secret_fingerprint=fingerprint(row.secret),
        previous_secret_expires_at=_local(row.previous_secret_expires_at, tz)
        if row.previous_secret
        else None,
        created_at=row.created_at.astimezone(tz),
        updated_at=row.updated_at.astimezone(tz),
        version=row.version,
    )


def delivery_out(row: Any, attempts: Iterable[Any], tz: tzinfo) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        kind=row.kind,
        event_type=row.event_type,
        event_id=row.event_id,
        position=row.position,
        problem_id=row.problem_id,
        status=row.status,
        attempt_count=row.attempts,
        next_attempt_at=_local(row.next_attempt_at, tz) if row.status == "pending" else None,
        created_at=row.created_at.astimezone(tz),
        last_attempt_at=_local(row.last_attempt_at, tz),
        delivered_at=_local(row.delivered_at, tz),
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        requested_by=row.requested_by,
        attempts=[
            AttemptOut(
                number=a.number,
                attempted_at=a.attempted_at.astimezone(tz),
                status_code=a.status_code,
                latency_ms=a.latency_ms,
                response=a.response,
                error=a.error,
                outcome=a.outcome,
                next_retry_at=_local(a.next_retry_at, tz),
                sender=a.sender,
            )
            for a in attempts
        ],
    )


def _event_types(values: Iterable[str]) -> list[str]:
    chosen = set(values)
    if ALL_TYPES in chosen:
        return [ALL_TYPES]
    return [t for t in PROBLEM_EVENT_TYPES if t in chosen]


class Webhooks:
    def __init__(
        self, db: Database, store: EventStore, directory: Directory, settings: Settings, clock: Clock
    ) -> None:
        self.db = db
        self.store = store
        self.directory = directory
        self.settings = settings
        self.clock = clock
        self.egress = Egress(settings.webhook_allowed_targets)
        self.wake = asyncio.Event()  # set when there is new work for this process's sender

    # -- scope -----------------------------------------------------------------------------

    def _require_manager(self, caller: Caller) -> None:
        if caller.role not in MANAGERS:
            raise AppError("forbidden", "webhooks are for admin, commander, dispatcher and handler keys")

    async def _unit_scope(self, caller: Caller, unit_id: str | None) -> tuple[str | None, str | None]:
        """The (unit, district) a subscription of `caller` filters on, checked against its scope."""
        self._require_manager(caller)
        if caller.role is Role.handler and unit_id is None:
            unit_id = caller.unit_id
        if unit_id is None:
            if caller.role is Role.dispatcher:
                raise AppError("forbidden", "a dispatcher's subscription names a unit of its district")
            return None, None
        unit = await self.directory.unit(unit_id)
        if unit is None:
            raise AppError("unknown_unit", f"unit {unit_id} does not exist")
        if caller.role is Role.handler:
            assert caller.unit_id is not None
            if unit.id not in await self.directory.subtree(caller.unit_id):
                raise AppError(
                    "forbidden", "a handler key subscribes within its own unit and the units below it"
                )
        if caller.role is Role.dispatcher and unit.district_id != caller.district_id:
            raise AppError("forbidden", "a dispatcher subscribes within its own district")
        return unit.id, unit.district_id

    async def _visible(self, caller: Caller) -> sa.ColumnElement[bool] | None:
        self._require_manager(caller)
        if caller.role in (Role.admin, Role.commander):
            return None
        if caller.role is Role.dispatcher:
            return ws.c.district_id == caller.district_id
        assert caller.unit_id is not None
        return ws.c.unit_id.in_(sorted(await self.directory.subtree(caller.unit_id)))

    async def _check_target(self, url: str) -> None:
        try:
            await self.egress.check(url)
        except InvalidTarget as exc:
            raise AppError("invalid_webhook_url", str(exc)) from None
        except RefusedTarget as exc:
            raise AppError("webhook_target_refused", str(exc)) from None

    # -- reading ---------------------------------------------------------------------------

    async def _row(self, subscription_id: str) -> Any | None:
        async with self.db.read() as conn:
            return (await conn.execute(sa.select(ws).where(ws.c.id == subscription_id))).first()

    async def get(self, caller: Caller, subscription_id: str) -> Any:
        stmt = sa.select(ws).where(ws.c.id == subscription_id)
        scope = await self._visible(caller)
        if scope is not None:
            stmt = stmt.where(scope)
        async with self.db.read() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise AppError("not_found", f"webhook {subscription_id} does not exist")
        return row

    async def search(
        self, caller: Caller, *, enabled: bool | None, limit: int, cursor: str | None
    ) -> tuple[list[Any], str | None]:
        stmt = sa.select(ws).order_by(ws.c.created_at, ws.c.id).limit(limit + 1)
        scope = await self._visible(caller)
        if scope is not None:
            stmt = stmt.where(scope)
        if enabled is not None:
            stmt = stmt.where(ws.c.enabled.is_(enabled))
        key = decode_cursor(cursor, 2)
        if key is not None:
            at = _cursor_instant(key[0])
            stmt = stmt.where(sa.or_(ws.c.created_at > at, sa.and_(ws.c.created_at == at, ws.c.id > key[1])))
        async with self.db.read() as conn:
            rows = list((await conn.execute(stmt)).all())
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1].created_at.isoformat(), rows[-1].id]) if more else None
        return rows, next_cursor

    # -- changing --------------------------------------------------------------------------

    async def create(
        self, caller: Caller, body: WebhookIn, meta: RequestMeta | None = None
    ) -> tuple[Any, str]:
        unit_id, district_id = await self._unit_scope(caller, body.unit_id)
        await self._check_target(body.url)
        subscription_id = "wh_" + secrets.token_hex(8)
        secret = generate_secret()
        now = self.clock.now()
        row = {
            "id": subscription_id,
            "url": body.url,
            "event_types": _event_types(body.event_types),
            "unit_id": unit_id,
            "district_id": district_id,
            "description": body.description,
            "enabled": body.enabled,
            "disabled_reason": None if body.enabled else f"created disabled by {caller.name}",
            "disabled_at": None if body.enabled else now,
            "owner_key_id": caller.key_id,
            "after_position": await self.store.last_position(),
            "secret": secret,
            "previous_secret": None,
            "previous_secret_expires_at": None,
            "failing_since": None,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        data = {k: v for k, v in row.items() if k not in ("secret", "previous_secret", "failing_since")}
        data["secret_fingerprint"] = fingerprint(secret)
        event = NewEvent(WEBHOOK_CREATED, data, metadata=event_metadata(caller, meta))
        await self.store.append(stream_id(subscription_id), 0, [event], also=[sa.insert(ws).values(row)])
        return await self.get(caller, subscription_id), secret

    async def update(
        self, caller: Caller, subscription_id: str, patch: WebhookPatch, meta: RequestMeta | None = None
    ) -> Any:
        given = patch.model_fields_set
        for _ in range(APPEND_ATTEMPTS):
            row = await self.get(caller, subscription_id)
            now = self.clock.now()
            changes: dict[str, Any] = {}
            if patch.url is not None and patch.url != row.url:
                await self._check_target(patch.url)
                changes["url"] = patch.url
            if patch.event_types is not None and _event_types(patch.event_types) != list(row.event_types):
                changes["event_types"] = _event_types(patch.event_types)
            if "unit_id" in given and patch.unit_id != row.unit_id:
                changes["unit_id"], changes["district_id"] = await self._unit_scope(caller, patch.unit_id)
            if "description" in given and patch.description != row.description:
                changes["description"] = patch.description
            if patch.enabled is not None and patch.enabled != row.enabled:
                changes["enabled"] = patch.enabled
                changes["disabled_reason"] = None if patch.enabled else f"disabled by {caller.name}"
                changes["disabled_at"] = None if patch.enabled else now
            if not changes:
                return row
            values = dict(changes, updated_at=now, version=row.version + 1)
            if changes.get("enabled") is True:
                values["failing_since"] = None  # a fresh start
            also: list[sa.Executable] = [
                sa.update(ws).where(ws.c.id == row.id, ws.c.version == row.version).values(values)
            ]
            if changes.get("enabled") is False:
                also.append(_fail_pending(row.id, "the subscription was disabled"))
            event = NewEvent(
                WEBHOOK_UPDATED,
                {"id": row.id, "changes": changes},
                metadata=event_metadata(caller, meta),
            )
            try:
                await self.store.append(stream_id(row.id), row.version, [event], also=also)
            except ConcurrencyConflict:
                continue
            return await self.get(caller, subscription_id)
        raise AppError("contention", f"webhook {subscription_id} kept changing; try again")

    async def delete(self, caller: Caller, subscription_id: str, meta: RequestMeta | None = None) -> None:
        for _ in range(APPEND_ATTEMPTS):
            row = await self.get(caller, subscription_id)
            event = NewEvent(WEBHOOK_DELETED, {"id": row.id}, metadata=event_metadata(caller, meta))
            stmt = sa.delete(ws).where(ws.c.id == row.id, ws.c.version == row.version)
            try:
                await self.store.append(stream_id(row.id), row.version, [event], also=[stmt])
            except ConcurrencyConflict:
                continue
            return
        raise AppError("contention", f"webhook {subscription_id} kept changing; try again")

    async def rotate_secret(
        self, caller: Caller, subscription_id: str, body: RotateIn, meta: RequestMeta | None = None
    ) -> tuple[Any, str]:
        grace = timedelta(
            seconds=self.settings.webhook_secret_grace_seconds
            if body.grace_period_seconds is None
            else body.grace_period_seconds
        )
        for _ in range(APPEND_ATTEMPTS):
            row = await self.get(caller, subscription_id)
            now = self.clock.now()
            secret = generate_secret()
            expires = now + grace if grace else None
            event = NewEvent(
                WEBHOOK_SECRET_ROTATED,
                {
                    "id": row.id,
                    "secret_fingerprint": fingerprint(secret),
                    "previous_secret_fingerprint": fingerprint(row.secret),
                    "previous_secret_expires_at": expires,
                },
                metadata=event_metadata(caller, meta),
            )
            stmt = (
                sa.update(ws)
                .where(ws.c.id == row.id, ws.c.version == row.version)
                .values(
                    secret=secret,
                    previous_secret=row.secret if expires else None,
                    previous_secret_expires_at=expires,
                    updated_at=now,
                    version=row.version + 1,
                )
            )
            try:
                await self.store.append(stream_id(row.id), row.version, [event], also=[stmt])
            except ConcurrencyConflict:
                continue
            return await self.get(caller, subscription_id), secret
        raise AppError("contention", f"webhook {subscription_id} kept changing; try again")

    async def disable(
        self,
        subscription_id: str,
        reason: str,
        *,
        delivery_id: str | None = None,
        status_code: int | None = None,
    ) -> bool:
        """The service gives up on an endpoint (410, or failing for too long): the subscription
        is disabled with its reason, its pending deliveries fail, a `webhook.disabled` event
        names the owner, and the delivery log gets a notice. False if it was already disabled."""
        for _ in range(APPEND_ATTEMPTS):
            row = await self._row(subscription_id)
            if row is None or not row.enabled:
                return False
            now = self.clock.now()
            event = NewEvent(
                WEBHOOK_DISABLED,
                {
                    "id": row.id,
                    "reason": reason,
                    "owner_key_id": row.owner_key_id,
                    "unit_id": row.unit_id,
                    "url": row.url,
                    "failing_since": row.failing_since,
                    "delivery_id": delivery_id,
                    "status_code": status_code,
                },
                metadata=event_metadata(SYSTEM),
            )
            notice = {
                "id": "ntc_" + event.event_id.hex,
                "subscription_id": row.id,
                "kind": "notice",
                "event_type": WEBHOOK_DISABLED,
                "event_id": event.event_id,
                "position": None,
                "problem_id": None,
                "body": "",
                "status": "notice",
                "attempts": 0,
                "round_start": 0,
                "next_attempt_at": None,
                "created_at": now,
                "last_status_code": status_code,
                "last_error": reason,
            }
            also = [
                sa.update(ws)
                .where(ws.c.id == row.id, ws.c.version == row.version)
                .values(
                    enabled=False,
                    disabled_reason=reason,
                    disabled_at=now,
                    updated_at=now,
                    version=row.version + 1,
                ),
                _fail_pending(row.id, "the subscription was disabled"),
                sa.insert(wd).values(notice),
            ]
            try:
                await self.store.append(stream_id(row.id), row.version, [event], also=also)
            except ConcurrencyConflict:
                continue
            log.warning("webhook %s (owner %s) disabled: %s", row.id, row.owner_key_id, reason)
            return True
        return False

    # -- the delivery log ------------------------------------------------------------------

    async def deliveries(
        self,
        caller: Caller,
        subscription_id: str,
        *,
        status: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Any], dict[str, list[Any]], str | None]:
        """Newest first: the deliveries, the latest attempts of each, and the next cursor."""
        await self.get(caller, subscription_id)
        stmt = (
            sa.select(wd)
            .where(wd.c.subscription_id == subscription_id)
            .order_by(wd.c.created_at.desc(), wd.c.id.desc())
            .limit(limit + 1)
        )
        if status is not None:
            stmt = stmt.where(wd.c.status == status)
        key = decode_cursor(cursor, 2)
        if key is not None:
            at = _cursor_instant(key[0])
            stmt = stmt.where(sa.or_(wd.c.created_at < at, sa.and_(wd.c.created_at == at, wd.c.id < key[1])))
        async with self.db.read() as conn:
            rows = list((await conn.execute(stmt)).all())
            more = len(rows) > limit
            rows = rows[:limit]
            attempts = await self._attempts(conn, [r.id for r in rows])
        next_cursor = encode_cursor([rows[-1].created_at.isoformat(), rows[-1].id]) if more else None
        return rows, attempts, next_cursor

    async def delivery(self, caller: Caller, subscription_id: str, delivery_id: str) -> tuple[Any, list[Any]]:
        await self.get(caller, subscription_id)
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(wd).where(wd.c.id == delivery_id, wd.c.subscription_id == subscription_id)
                )
            ).first()
            if row is None:
                raise AppError("not_found", f"delivery {delivery_id} does not exist")
            attempts = await self._attempts(conn, [row.id])
        return row, attempts.get(row.id, [])

    async def _attempts(self, conn: Any, delivery_ids: list[str]) -> dict[str, list[Any]]:
        if not delivery_ids:
            return {}
        rows = (
            await conn.execute(
                sa.select(webhook_attempts)
                .where(webhook_attempts.c.delivery_id.in_(delivery_ids))
                .order_by(webhook_attempts.c.id.desc())
            )
        ).all()
        grouped: dict[str, list[Any]] = {}
        for row in rows:
            shown = grouped.setdefault(row.delivery_id, [])
            if len(shown) < ATTEMPTS_SHOWN:
                shown.append(row)
        return grouped

    async def redeliver(
        self, caller: Caller, subscription_id: str, delivery_id: str, meta: RequestMeta | None = None
    ) -> tuple[Any, list[Any]]:
        """Send a delivery again now, with the same `webhook-id` and body; a new round of retries."""
        for _ in range(APPEND_ATTEMPTS):
            sub = await self.get(caller, subscription_id)
            if not sub.enabled:
                raise AppError("webhook_disabled", f"webhook {subscription_id} is disabled")
            row, _attempts = await self.delivery(caller, subscription_id, delivery_id)
            if row.kind == "notice":
                raise AppError("conflict", f"{delivery_id} is a log entry, not a delivery")
            event = NewEvent(
                WEBHOOK_REDELIVERY_REQUESTED,
                {
                    "id": sub.id,
                    "delivery_id": row.id,
                    "event_id": str(row.event_id) if row.event_id else None,
                    "event_type": row.event_type,
                },
                metadata=event_metadata(caller, meta),
            )
            stmt = (
                sa.update(wd)
                .where(wd.c.id == row.id)
                .values(
                    status="pending",
                    next_attempt_at=self.clock.now(),
                    round_start=wd.c.attempts,
                    requested_by=caller.key_id,
                )
            )
            bump = (
                sa.update(ws)
                .where(ws.c.id == sub.id, ws.c.version == sub.version)
                .values(version=sub.version + 1)
            )
            try:
                await self.store.append(stream_id(sub.id), sub.version, [event], also=[bump, stmt])
            except ConcurrencyConflict:
                continue
            self.wake.set()
            return await self.delivery(caller, subscription_id, delivery_id)
        raise AppError("contention", f"webhook {subscription_id} kept changing; try again")

    async def ping(self, caller: Caller, subscription_id: str) -> tuple[Any, list[Any]]:
        """Queue a `webhook.ping` for the sender (an operational record, not an event)."""
        sub = await self.get(caller, subscription_id)
        if not sub.enabled:
            raise AppError("webhook_disabled", f"webhook {subscription_id} is disabled")
        now = self.clock.now()
        delivery_id = "msg_" + uuid.uuid4().hex
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.insert(wd).values(
                    id=delivery_id,
                    subscription_id=sub.id,
                    kind="ping",
                    event_type=PING,
                    body=ping_body(sub.id, now, self.settings.tz),
                    status="pending",
                    attempts=0,
                    round_start=0,
                    next_attempt_at=now,
                    created_at=now,
                    requested_by=caller.key_id,
                )
            )
        self.wake.set()
        return await self.delivery(caller, subscription_id, delivery_id)


def _fail_pending(subscription_id: str, reason: str) -> sa.Update:
    return (
        sa.update(wd)
        .where(wd.c.subscription_id == subscription_id, wd.c.status == "pending")
        .values(status="failed", next_attempt_at=None, last_error=reason)
    )


def _cursor_instant(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise AppError("invalid_cursor", "the cursor is not one this service issued") from exc
