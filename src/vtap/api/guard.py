"""What every HTTP request passes before and after the API sees it.

Before: requests without a token are rate-limited per client address, the `Host`
header must name this server (a browser page elsewhere cannot reach the API by
rebinding a DNS name to 127.0.0.1), and a body over 1 MiB is refused with
413 before it is read whole, so one client cannot stall the event loop that also runs
the switches. After: every request that could change something — every method but
GET, HEAD and OPTIONS — is written to the audit trail with its outcome, refusals
included; handlers add what they changed (`request.state.audit_*`).
"""

from __future__ import annotations

import gc
import json
import logging
import time
from typing import Any

from vtap.api.auth import Tokens
from vtap.model import audit
from vtap.store.base import PolicyStore
from vtap.store.errors import StoreUnavailable

log = logging.getLogger(__name__)
FREEZE_RECORDS = 1_000  # a bulk change's audit records, beyond which they are frozen until written

MAX_BODY = 1 << 20
# A whole policy set (`PUT /api/v1/taps`, `POST /api/v1/taps:batch`) runs to ~150 bytes a
# policy: these two take up to 32 MiB, and only from a client holding a valid token.
BULK = {("PUT", "/api/v1/taps"), ("POST", "/api/v1/taps:batch")}
MAX_BULK_BODY = 32 << 20
READS = ("GET", "HEAD", "OPTIONS")
# A sensor's report changes no tap and comes every second: written down only when refused.
UNAUDITED_WHEN_DONE = {("POST", "/api/v1/sensors/reports")}
# Requests without a token (health probes, the UI's page and assets) per client address:
# a steady rate and a burst. Beyond it, 429 at once, before any work: whoever can reach
# the port cannot make the loop that also runs the switches do work at will.
UNAUTHENTICATED_PER_S = 50.0
UNAUTHENTICATED_BURST = 100.0
ADDRESSES_TRACKED = 4096  # the oldest address is forgotten beyond this (its bucket starts full again)


class AddressRate:
    """A token bucket per client address, bounded in the addresses it keeps."""

    def __init__(self, rate: float = UNAUTHENTICATED_PER_S, burst: float = UNAUTHENTICATED_BURST):
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)

    def allow(self, address: str, now: float) -> bool:
        tokens, when = self.buckets.pop(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        allowed = tokens >= 1.0
        self.buckets[address] = (tokens - 1.0 if allowed else tokens, now)  # re-inserted: most recent last
        if len(self.buckets) > ADDRESSES_TRACKED:
            del self.buckets[next(iter(self.buckets))]
        return allowed


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    def __init__(self, app, store: PolicyStore, tokens: Tokens, allowed_hosts: list[str], max_body: int = MAX_BODY):
        self.app = app
        self.store = store
        self.tokens = tokens
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.max_body = max_body
        self.unauthenticated = AddressRate()

    def _host_allowed(self, host: str) -> bool:
        name = host.strip().lower()
        if name.startswith("["):  # [::1]:8080
            name = name[1:].partition("]")[0]
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        return name in self.allowed_hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status: dict[str, Any] = {}
        scheme, _, secret = headers.get("authorization", "").partition(" ")
        if "x-auth-token" in headers and not scheme:  # the OpenStack clients' header (/v2.0): a vtap token as well
            scheme, secret = "bearer", headers["x-auth-token"]
        if scheme.lower() != "bearer" or self.tokens.principal(secret.strip()) is None:
            # No valid token (none, or any made-up header): the per-address limit.
            remote = scope["client"][0] if scope.get("client") else "unknown"
            if not self.unauthenticated.allow(remote, time.monotonic()):
                await _reply(send, 429, "too many requests without a token from this address; try again later")
                return

        async def audit_once(code: int) -> None:
            # A throttled refusal (429) is not written down: that would let anyone grow
            # the trail at will; the failures before it are.
            # Reads are not, except those that say what they read (a capture's download).
            asked = scope["method"] not in READS or (scope.get("state") or {}).get("audit_action")
            routine = (scope["method"], scope["path"]) in UNAUDITED_WHEN_DONE and code < 400
            if asked and not routine and code != 429 and "audited" not in status:
                status["audited"] = True
                await self._audit(scope, code)

        async def send_recording(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                await audit_once(message["status"])  # on the record before the client hears the outcome
            await send(message)

        limit = self.max_body
        if (scope["method"], scope["path"]) in BULK:
            # The larger limit only for a valid token; a wrong one counts as a failed
            # authentication here too, so guessing through this door is throttled alike.
            scheme, _, secret = headers.get("authorization", "").partition(" ")
            remote = scope["client"][0] if scope.get("client") else "unknown"
            if scheme.lower() == "bearer" and not self.tokens.throttled(remote):
                if self.tokens.principal(secret.strip()) is not None:
                    limit = MAX_BULK_BODY
                else:
                    self.tokens.failed(remote)
        try:
            await self._serve(scope, receive, send_recording, headers, limit)
        finally:
            await audit_once(status.get("code", 500))  # a request that died before any reply

    async def _serve(self, scope, receive, send_recording, headers: dict[str, str], limit: int) -> None:
        if not self._host_allowed(headers.get("host", "")):
            await _reply(send_recording, 400, f"Host {headers.get('host', '')!r} is not one of this server's names (--api-allowed-hosts)")
        elif int(headers.get("content-length") or 0) > limit:
            await _reply(send_recording, 413, f"request body over {limit} bytes")
        elif scope["method"] in READS:
            await self.app(scope, receive, send_recording)
        else:
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if size > limit:
                    await _reply(send_recording, 413, f"request body over {limit} bytes")
                    break
            else:
                await self.app(scope, _replay(b"".join(chunks), receive), send_recording)

    async def _audit(self, scope, code: int) -> None:
        """The request's record, and one per policy a bulk request touched
        (`audit_each`), so each policy's history is complete.

        With etcd unreachable no change can be made either (the store refuses it with
        503), so a record that cannot be written is about a refusal: it is logged."""
        state = scope.get("state") or {}
        client = scope.get("client")
        common = {"actor": state.get("actor", "anonymous"), "remote": f"{client[0]}:{client[1]}" if client else "unknown",
                  "result": str(code)}
        records = [{
            "time": time.time(), **common,
            "action": state.get("audit_action") or f"{scope['method']} {scope['path']}",
            "target": state.get("audit_target") or scope["path"],
            "before": state.get("audit_before"),
            "after": state.get("audit_after"),
        }] + [{"time": time.time(), **common, **each} for each in state.get("audit_each", ())]
        if len(records) > FREEZE_RECORDS:
            # A bulk change's records (100,000 for one PUT: millions of objects) live
            # until they are written; frozen, no full collection meanwhile walks them.
            gc.freeze()
        try:
            await self.store.append_audits(records)  # a bulk change's records in one go
        except StoreUnavailable as exc:
            for record in records:
                log.error("audit record not written (%s): %s", exc, json.dumps(audit.plain(record))[:2000])


def _replay(body: bytes, receive):
    """A `receive` that hands the buffered body to the app, then waits on the real one."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
