"""This instance's place in a cluster on etcd: membership, leader election, fencing.

Each instance holds one etcd lease (TTL a few seconds, refreshed three times per TTL)
and registers itself under it (`members/<id>`: its API address, since when). The
leader is the instance whose campaign created the `leader` key under its lease; the
key's create revision is the leader's *generation*: etcd's revisions only grow, so a
later leader always has a larger generation, and Open vSwitch refuses a ROLE_REQUEST
MASTER from an older one (OFPRRFC_STALE) and demotes an old master to SLAVE when a
newer one asks.

An instance stops writing the moment it cannot be sure it still leads: the lease
refresh says it expired, the leader key names another, or more than a lease's time
passed since etcd last confirmed the lease (a paused process, an unreachable etcd) —
`may_write()` checks that last condition locally, without a round trip, before every
batch sent to a switch. The switches' role check then fences whatever it missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Callable

from vtap.store.errors import StoreUnavailable

if TYPE_CHECKING:  # etcd's client (grpc) is imported only by a cluster member: 15 MiB otherwise
    from vtap.store.etcd import EtcdStore

log = logging.getLogger(__name__)

LEASE_TTL_S = 3
HISTORY = 20  # role changes kept for the API


class Cluster:
    def __init__(self, store: EtcdStore, member_id: str, api_url: str, *, ttl: int = LEASE_TTL_S):
        self.store = store
        self.member_id = member_id
        self.api_url = api_url
        self.ttl = ttl
        self.leading = False
        self.generation = 0  # of this instance's leadership, while it leads
        self.since = time.time()  # of the current role
        self.lease_id: int | None = None
        self.on_role: Callable[[bool, int, str], None] = lambda leading, generation, why: None
        self.history: deque[dict] = deque(maxlen=HISTORY)
        self._confirmed_until = 0.0  # monotonic: the lease is alive at least until then
        self._task: asyncio.Task | None = None
        self._campaigning = False

    # ---- what the controller asks -------------------------------------------------------

    def may_write(self) -> bool:
        """Whether this instance may send rules to switches now: it leads, and etcd
        confirmed its lease recently enough that no other instance can lead yet."""
        return self.leading and time.monotonic() < self._confirmed_until

    def describe(self) -> dict:
        leader = self.store.leader
        return {"member": self.member_id, "role": "leader" if self.leading else "follower",
                "since": self.since, "generation": self.generation if self.leading else (leader[1] if leader else 0),
                "leader": leader[0] if leader else None, "lease_ttl_s": self.ttl, "history": list(self.history)}

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Join (StoreUnavailable when etcd does not answer), then keep the lease alive."""
        await self._join()
        self._task = asyncio.create_task(self._keepalive(), name="cluster-lease")
        await self.campaign()

    async def stop(self) -> None:
        """Leave: a leader resigns, so another takes over at once instead of after the TTL."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.leading:
            generation = self.generation
            self.step_down("this instance is stopping")
            try:
                await self.store.resign(self.member_id, generation)
            except StoreUnavailable:
                pass

    async def _join(self) -> None:
        sent = time.monotonic()
        self.lease_id = await self.store.grant_lease(self.ttl)
        self._confirmed_until = sent + self.ttl
        await self.store.register(self.member_id, {"api": self.api_url, "since": time.time()}, self.lease_id)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            sent = time.monotonic()
            try:
                if self.lease_id is None:
                    await self._join()
                    left = self.ttl
                else:
                    left = await self.store.refresh_lease(self.lease_id)
            except StoreUnavailable as exc:
                if self.leading and time.monotonic() >= self._confirmed_until:
                    self.step_down(f"lease not confirmed for {self.ttl} s ({exc})")
                continue
            if left <= 0:
                self.lease_id = None
                if self.leading:
                    self.step_down("lease expired (this instance was paused or cut off)")
                continue
            self._confirmed_until = sent + left
            leader = self.store.leader
            if self.leading and time.monotonic() >= self._confirmed_until:
                self.step_down("lease confirmed too late")
            elif not self.leading and leader is not None and leader[0] == self.member_id:
                # The key outlived this instance's doubt (etcd was away and kept the
                # lease): give it up, so that a fresh election makes a new generation.
                try:
                    await self.store.resign(self.member_id, leader[1])
                except StoreUnavailable:
                    pass
            elif not self.leading and leader is None:
                await self.campaign()

    # ---- leadership ----------------------------------------------------------------------------

    async def campaign(self) -> None:
        """Try to take the leader key (nothing happens when someone holds it)."""
        if self.leading or self._campaigning or self.lease_id is None:
            return
        self._campaigning = True
        try:
            generation = await self.store.campaign(self.member_id, self.lease_id)
        except StoreUnavailable as exc:
            log.warning("campaign failed: %s", exc)
            return
        finally:
            self._campaigning = False
        if generation is not None and not self.leading:
            # The lease may not have been confirmed for a while (etcd was away and kept it):
            # confirm it now, so that this instance may write to the switches at once
            # rather than after the next keep-alive (the reconcilers also retry).
            sent = time.monotonic()
            try:
                left = await self.store.refresh_lease(self.lease_id)
                if left > 0:
                    self._confirmed_until = max(self._confirmed_until, sent + left)
            except StoreUnavailable:
                pass
            if self.leading:
                return
            self.leading, self.generation, self.since = True, generation, time.time()
            self.store.fence = (self.member_id, generation)
            self._record("leader", f"elected with generation {generation}")
            log.warning("this instance (%s) leads now, generation %d", self.member_id, generation)
            self.on_role(True, generation, "elected")

    def leader_changed(self, leader: tuple[str, int] | None) -> None:
        """The leader key changed (from the store's watch)."""
        if self.leading and leader != (self.member_id, self.generation):
            self.step_down(f"the leader key names {leader[0] if leader else 'nobody'}")
        if leader is None and not self.leading:
            asyncio.ensure_future(self.campaign())
        elif not self.leading:
            self.on_role(False, leader[1], f"{leader[0]} leads")

    def step_down(self, why: str) -> None:
        if not self.leading:
            return
        self.leading, self.since = False, time.time()
        self.store.fence = None
        self._record("follower", why)
        log.error("this instance (%s) stops writing and follows: %s", self.member_id, why)
        leader = self.store.leader
        self.on_role(False, leader[1] if leader else self.generation, why)

    def _record(self, role: str, why: str) -> None:
        self.history.append({"time": time.time(), "role": role, "why": why})
