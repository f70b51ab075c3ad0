"""What the routers share, kept in `app.state` by `create_app`, and the `Depends` getters
that hand it to the handlers: the routers are module-level, the controller, the tokens
and the rest belong to the application.

One application has one of each: the controller and its store, the tokens, one
`HeavyWork` (`api/pacing.py`: heavy slices of every request, one at a time), one lock
for the bulk bodies (`api/bulk.py`: one taken at a time) and the metrics registry the
request-latency middleware writes to.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CollectorRegistry

from vtap.api.auth import BEARER, Principal, Tokens, authenticate
from vtap.api.pacing import HeavyWork
from vtap.control.controller import Controller
from vtap.model.access import Role
from vtap.store.base import PolicyStore


def share(app: FastAPI, ctl: Controller, tokens: Tokens) -> None:
    """Give `app` what its handlers need."""
    app.state.ctl = ctl
    app.state.store = ctl.store
    app.state.tokens = tokens
    # Bulk bodies, listings, scrapes and counts of every policy: half the loop at most,
    # and a quarter of the interpreter while a whole compile runs in its thread.
    app.state.heavy = HeavyWork(lambda: ctl.compiling)
    app.state.bulk_turn = asyncio.Lock()  # one bulk body parsed and applied at a time (api/bulk.py)
    app.state.registry = CollectorRegistry()


def get_controller(request: Request) -> Controller:
    return request.app.state.ctl


def get_store(request: Request) -> PolicyStore:
    return request.app.state.store


def get_tokens(request: Request) -> Tokens:
    return request.app.state.tokens


def get_heavy(request: Request) -> HeavyWork:
    return request.app.state.heavy


def get_bulk_turn(request: Request) -> asyncio.Lock:
    return request.app.state.bulk_turn


def get_registry(request: Request) -> CollectorRegistry:
    return request.app.state.registry


Ctl = Annotated[Controller, Depends(get_controller)]
AppStore = Annotated[PolicyStore, Depends(get_store)]
AppTokens = Annotated[Tokens, Depends(get_tokens)]
Heavy = Annotated[HeavyWork, Depends(get_heavy)]
BulkTurn = Annotated[asyncio.Lock, Depends(get_bulk_turn)]
Registry = Annotated[CollectorRegistry, Depends(get_registry)]


def require(role: Role):
    """A dependency: the request's principal, at least `role`; else 401, 403 or 429."""

    async def dependency(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(BEARER)) -> Principal:
        return authenticate(get_tokens(request), request, creds, role)

    return dependency


# One dependency per role, so that a route asking for the same role twice (its router's
# and its own) checks the token once.
viewer = require(Role.VIEWER)
operator = require(Role.OPERATOR)
admin = require(Role.ADMIN)
sensor = require(Role.SENSOR)
