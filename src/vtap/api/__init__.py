"""Northbound: the REST API (FastAPI, OpenAPI at /docs)."""

# Here, not in `auth`: `vtap serve` reads it before it imports FastAPI (see vtap.api.server).
FAILURES_ALLOWED = 10  # failed authentications per client address per minute; more get 429
