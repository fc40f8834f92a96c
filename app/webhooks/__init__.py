"""Webhooks: signed (Standard Webhooks v1), at-least-once notifications to handlers' systems,
driven from the event log.

`service.py` manages subscriptions (every change an event); `fanout.py` is the follower that
turns problem events into deliveries in the same transaction as its checkpoint; `sender.py`
claims due deliveries, signs and POSTs them, and records attempts, retries and disabling;
`egress.py` keeps requests away from private networks; `policy.py` is the retry policy.
"""
