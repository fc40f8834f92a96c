"""Prometheus metrics (`/metrics`). One registry per process; with several worker processes,
scrape each (or run the API behind a load balancer and the `worker` process separately)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

HTTP_REQUESTS = Counter(
    "dispatchroom_http_requests_total",
    "HTTP requests by route template, method and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "dispatchroom_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_APPENDED = Counter(
    "dispatchroom_events_appended_total", "Events appended by this process, by type.", ["type"]
)
CONCURRENCY_CONFLICTS = Counter(
    "dispatchroom_concurrency_conflicts_total", "Appends refused because the stream moved on."
)
SEQUENCER_ASSIGNED = Counter(
    "dispatchroom_sequencer_positions_total", "Global positions assigned by this process's sequencer."
)
FOLLOWER_EVENTS = Counter(
    "dispatchroom_follower_events_total", "Events handled by a follower in this process.", ["follower"]
)
FOLLOWER_LAG_EVENTS = Gauge(
    "dispatchroom_follower_lag_events", "Events between a follower's checkpoint and the head.", ["follower"]
)
FOLLOWER_LAG_SECONDS = Gauge(
    "dispatchroom_follower_lag_seconds", "Age of the oldest event a follower has not handled.", ["follower"]
)
CALENDAR_FALLBACK = Gauge(
    "dispatchroom_calendar_fallback_years",
    "Years within the next 90 days without official holiday data (deadlines use Monday–Friday).",
)

AUTOMATIC_ACTIONS = Counter(
    "dispatchroom_automatic_events_total",
    "Events appended by this process's automatic actions (scheduler), by type.",
    ["type"],
)
SCHEDULER_TICKS = Counter(
    "dispatchroom_scheduler_ticks_total",
    "Scheduler ticks by outcome: `ran`, or `skipped` (another process held the lease).",
    ["outcome"],
)


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
