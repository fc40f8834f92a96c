"""The global event feed for portals: `/v1/events` (pages) and `/v1/events/stream` (SSE)."""
