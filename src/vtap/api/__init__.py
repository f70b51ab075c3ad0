"""Northbound: the REST API (FastAPI, OpenAPI at /docs)."""
