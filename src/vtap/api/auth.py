"""Bearer tokens: who is asking, with which role and scope; failed attempts throttled.

Tokens are random (256 bits), shown once when made and stored only as SHA-256 hashes
(a random secret needs no slow hash), revocable at once: each request looks its token
up again. On first start `vtap serve` makes an admin token and writes it, mode 0600,
to `<state-dir>/admin.token`. Every route but `GET /api/v1/health` (and the static
page, the OpenAPI schema and its docs, which hold no data) depends on `vtap.api.deps.require(role)`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vtap.api import FAILURES_ALLOWED
from vtap.model.access import Role, Scope
from vtap.store.base import PolicyStore

TOKEN_PREFIX = "vtap_"
ADMIN_TOKEN_FILE = "admin.token"
FAILURE_WINDOW_S = 60.0
MAX_TRACKED_ADDRESSES = 10_000

# Statuses any route may answer besides its own: declared once for the OpenAPI schema.
ERRORS: dict[int | str, dict] = {
    400: {"description": "the Host header is not one of this server's names (--api-allowed-hosts)"},
    401: {"description": "no token, or an unknown, revoked or expired one"},
    403: {"description": "the token's role, or its scope, does not allow this"},
    413: {"description": "request body over 1 MiB"},
    429: {"description": "too many failed authentications from this address"},
}

BEARER = HTTPBearer(auto_error=False, description="a vtap token: `Authorization: Bearer vtap_...`")


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    role: Role
    scope: Scope | None


class Tokens:
    """Tokens in the store, and the throttle on failed attempts."""

    def __init__(self, store: PolicyStore, failures_allowed: int = FAILURES_ALLOWED):
        self.store = store
        self.failures_allowed = failures_allowed  # 0: no throttle
        self._failures: dict[str, deque[float]] = {}

    async def mint(self, name: str, role: Role, scope: Scope | None, expires_in_s: float | None) -> tuple[dict, str]:
        """(the stored record, the secret): the secret is never stored nor shown again."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires_at = time.time() + expires_in_s if expires_in_s else None
        record = await self.store.add_token(name, role.value, scope.model_dump(mode="json") if scope else None, token_hash(secret), expires_at)
        return record, secret

    def principal(self, secret: str) -> Principal | None:
        record = self.store.token_by_hash(token_hash(secret))
        if record is None or (record["expires_at"] is not None and record["expires_at"] <= time.time()):
            return None
        scope = Scope(**record["scope"]) if record["scope"] else None
        return Principal(record["id"], record["name"], Role(record["role"]), scope)

    async def ensure_admin_token(self, state_dir: str | Path) -> Path | None:
        """On first start, or whenever no admin token that does not expire is left (a
        restart is then the way back in): an admin token in `<state_dir>/admin.token`, 0600."""
        if any(t["role"] == Role.ADMIN and t["expires_at"] is None for t in self.store.list_tokens()):
            return None
        _, secret = await self.mint("admin", Role.ADMIN, None, None)
        path = Path(state_dir) / ADMIN_TOKEN_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        os.chmod(path, 0o600)
        return path

    def throttled(self, remote: str) -> bool:
        times = self._failures.get(remote)
        if not times or not self.failures_allowed:
            return False
        self._prune(remote, time.monotonic())
        return len(self._failures.get(remote, ())) >= self.failures_allowed

    def failed(self, remote: str) -> None:
        if not self.failures_allowed:
            return
        now = time.monotonic()
        self._failures.setdefault(remote, deque(maxlen=self.failures_allowed)).append(now)
        if len(self._failures) > MAX_TRACKED_ADDRESSES:  # forget addresses whose failures are all old
            for other in list(self._failures):
                self._prune(other, now)

    def _prune(self, remote: str, now: float) -> None:
        times = self._failures[remote]
        while times and now - times[0] > FAILURE_WINDOW_S:
            times.popleft()
        if not times:
            del self._failures[remote]


def remote_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def authenticate(tokens: Tokens, request: Request, creds: HTTPAuthorizationCredentials | None, role: Role) -> Principal:
    """The request's principal, at least `role`; else 401, 403 or 429 (`vtap.api.deps.require`)."""
    remote = remote_of(request)
    principal = tokens.principal(creds.credentials) if creds and creds.scheme.lower() == "bearer" else None
    if principal is None and tokens.throttled(remote):
        # Guessing is slowed down; a client with a valid token is never locked out by others' failures.
        request.state.actor = "invalid token"
        raise HTTPException(429, "too many failed authentications from this address; try again later",
                            headers={"Retry-After": str(int(FAILURE_WINDOW_S))})
    if principal is None:
        tokens.failed(remote)
        request.state.actor = "anonymous" if creds is None else "invalid token"
        why = "a token is needed: Authorization: Bearer <token>" if creds is None else "the token is unknown, revoked or expired"
        raise HTTPException(401, why, headers={"WWW-Authenticate": 'Bearer realm="vtap"'})
    request.state.actor = principal.name
    request.state.principal = principal
    if not principal.role.may(role):
        raise HTTPException(403, f"role {principal.role.value} may not do this: it needs {role.value}")
    return principal
