"""What the rest of vtap may ask of a store: the one interface that `vtap.store.sqlite.Store`
(standalone, the default) and `vtap.store.etcd.EtcdStore` (a cluster) both keep.

Reads are plain methods, answered at once (etcd: from the instance's copy of the store).
Writes a caller waits for (the API's) are coroutines; in SQLite they complete at once.
What the controller learns (hosts, links, pins, policy states) is written by plain
methods: in SQLite one transaction each, in etcd queued and published by the leader only.

Refusals are those of `vtap.store.errors`: NameTaken, NotFound, and StoreUnavailable
(etcd only: unreachable, or this instance fenced off; nothing was changed).

Opening and closing are not part of it: `vtap.serve` makes the concrete store and ends it
(`Store.close`; `EtcdStore.open`, `aclose`), and `vtap.control.cluster` drives the etcd
store's membership and leadership itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from vtap.model.network import Host, Link
from vtap.model.policy import Tap, PolicyPlan, TapSpec


class PolicyStore(Protocol):
    state_dir: Path  # this instance's local files (the admin token, captures), whichever the store
    reachable: bool  # whether the store answered its last call (SQLite: always; etcd: probed every second)
    last_error: str  # why it did not, when it did not

    def __repr__(self) -> str:
        """Where the store is, for GET /api/v1/cluster: the database file, or etcd://HOST:PORT[,...]."""

    def secret(self, name: str) -> bytes:
        """Sync: 32 random bytes made once under `name`, the same ever after (etcd: KeyError unless `open` made it)."""

    # ---- what the controller learned: read at start, written as it changes ------------

    def load_hosts(self) -> list[Host]:
        """Sync: the stored learned hosts, by MAC; never raises StoreUnavailable."""

    def save_hosts(self, hosts: list[Host]) -> None:
        """Sync: add or replace these hosts (by MAC); etcd queues them, written only while this instance leads."""

    def delete_hosts(self, macs: list[str]) -> None:
        """Sync: forget these hosts (an unknown MAC is no error); etcd queues it, as save_hosts."""

    def load_links(self) -> list[Link]:
        """Sync: the inter-switch links last proven by LLDP, sorted; never raises StoreUnavailable."""

    def save_links(self, links) -> None:
        """Sync: replace the stored links with these, whole; etcd queues it, as save_hosts."""

    def pin_of(self, dpid: int) -> str | None:
        """Sync: the certificate fingerprint pinned for a datapath id, or None."""

    def save_pin(self, dpid: int, fingerprint: str) -> None:
        """Sync: pin a switch's certificate fingerprint (replacing any); etcd queues it, as save_hosts."""

    async def delete_pin(self, dpid: int) -> None:
        """Async: forget a switch's pin (its next connection pins anew); NotFound if none; StoreUnavailable."""

    # ---- TAP policies -------------------------------------------------------------------

    def load_taps(self) -> list[Tap]:
        """Sync: every stored policy, by id; never raises StoreUnavailable."""

    async def add_tap(self, spec: TapSpec) -> Tap:
        """Async: store a new policy under a new id; NameTaken, StoreUnavailable (nothing stored)."""

    async def update_tap(self, tap_id: int, spec: TapSpec) -> Tap:
        """Async: replace a policy's spec, its id kept; NotFound, NameTaken, StoreUnavailable (nothing changed)."""

    async def delete_tap(self, tap_id: int) -> None:
        """Async: remove a policy; NotFound, StoreUnavailable."""

    async def replace_taps(self, specs: list[TapSpec], *, prune: bool) -> PolicyPlan:
        """Async: make the stored set equal to `specs` by name in one transaction, or nothing; ValueError, StoreUnavailable."""

    def tap_revision(self, tap_id: int) -> int:
        """Sync: a number that changes with every write of this policy, and only then (0: no such policy)."""

    def publish_status(self, status: dict) -> None:
        """Sync: the policies' states as this leading instance sees them, for followers to show; never raises."""

    # ---- API tokens (their hashes) -----------------------------------------------------

    async def add_token(self, name: str, role: str, scope: dict | None, token_hash: str,
                        expires_at: float | None) -> dict:
        """Async: store a token by its hash; its record (id, name, role, scope, created, expires_at); StoreUnavailable."""

    def token_by_hash(self, token_hash: str) -> dict | None:
        """Sync: the record of the token with this hash, expired or not, or None."""

    def list_tokens(self) -> list[dict]:
        """Sync: every token's record, by id."""

    async def delete_token(self, token_id: int) -> None:
        """Async: revoke a token; NotFound, StoreUnavailable."""

    # ---- the audit chain -------------------------------------------------------------------

    async def append_audits(self, records: list[dict]) -> None:
        """Async: append records to the hash chain in order (read them back with `audit_records`); StoreUnavailable."""

    async def audit_records(self, *, since: int = 0, actor: str | None = None, target: str | None = None,
                            limit: int | None = None) -> list[dict]:
        """Async: the records after seq `since`, in order, filtered; StoreUnavailable (etcd reads them from etcd)."""


StoredState = tuple[list[Host], list[Tap], list[Link]]


def stored_state(store: PolicyStore) -> StoredState:
    """What a controller starts from: the hosts, policies and links the store keeps."""
    return store.load_hosts(), store.load_taps(), store.load_links()
