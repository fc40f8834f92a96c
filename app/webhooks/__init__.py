"""Webhooks: signed (Standard Webhooks v1), at-least-once notifications to handlers' systems,
driven from the event log.

`service.py` manages subscriptions (every change an event) and the delivery log; `fanout.py` is
the follower that turns problem events into deliveries in the same transaction as its
checkpoint; `sender.py` claims due deliveries, signs and POSTs them (`transport.py`, `signing.py`)
and records attempts, retries and disabling (`policy.py`); `egress.py` keeps requests away from
private networks; `openapi.py` documents the payloads; `workers.py` wires the background work.
"""
