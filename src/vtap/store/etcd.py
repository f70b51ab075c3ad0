"""etcd v3 as vtap's store, for a cluster of controllers (`--store etcd://HOST:PORT[,...]`).

Every instance keeps a copy of the store's keys (all but the audit trail), read once and
then kept current by one watch; reads are served from that copy. Writes are etcd
transactions compared on a revision, so two instances never lose each other's updates:
every policy write rewrites one key (`taps-meta`, which holds the next id) and commits
only if that key is still at the revision the write was planned against. Policy writes
are thus serialised across the cluster, ids never collide and a name is unique
cluster-wide; a write planned on a stale copy fails its compare, the copy is read again
and the write planned again. Audit appends compare the chain's head in the same way.

What a write changed is applied to the copy at once (an instance reads its own writes);
the watch brings the other instances' writes, and `listener` hears of every change.
Learned hosts, proven links and the policies' states are the leader's to publish: they
are queued, coalesced and written in the background, each write fenced by the leader
key (it commits only while this instance holds the leadership it was given).

Key layout under the prefix (default `/vtap/`): `taps/<id>`, `taps-meta`, `tokens/<id>`,
`tokens-meta`, `audit/<seq>`, `audit-head`, `hosts/<mac>`, `links`, `pins/<dpid>`, `secrets/<name>`,
`members/<id>` and `leader` (both under the instance's lease), `status`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets as secrets_
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import aetcd
import grpc
from aetcd import rpc

from vtap.model import audit
from vtap.model.network import Host, Link
from vtap.model.policy import Tap, PolicyPlan, TapSpec, index_name, plan_changes
from vtap.store.etcd_client import (EtcdClient, EtcdTLS, create_is, delete_op, is_tls, mod_is, parse_endpoints, put_op,
                                   shut)
from vtap.store.errors import NameTaken, NotFound, StoreUnavailable

log = logging.getLogger(__name__)

PREFIX = "/vtap/"
TIMEOUT_S = 2.0  # one etcd call; beyond it the store counts as unreachable
WRITE_ATTEMPTS = 20  # optimistic writes re-planned after a conflicting write
AUDIT_BATCH = 100  # audit records per transaction (etcd's default limit: 128 operations)
PUBLISH_OPS = 100  # per published transaction: under etcd's default --max-txn-ops (128)
PROBE_S = 1.0  # how often the store checks that etcd answers (and restarts its watch)
TAPS_META, TOKENS_META, AUDIT_HEAD, LINKS, STATUS, LEADER = "taps-meta", "tokens-meta", "audit-head", "links", "status", "leader"


@dataclass(frozen=True)
class KeyChange:
    """One key of the store changed: `kind` is its folder (tap, host, member, ...) or
    its name (links, leader); `value` is parsed, None when deleted."""

    kind: str
    name: str
    value: Any
    revision: int


def _keep(mapping: dict, key: str, value: Any) -> None:
    """Hold `value` under `key`, or forget the key when the value is gone (None)."""
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class EtcdStore:
    def __init__(self, endpoints: list[tuple[str, int]], state_dir: str | Path, *, prefix: str = PREFIX,
                 timeout: float = TIMEOUT_S, tls: EtcdTLS | None = None):
        self.endpoints = endpoints
        self.tls = tls
        self.state_dir = Path(state_dir)  # local files only: the admin token, capture files
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.timeout = timeout
        self.listener: Callable[[KeyChange], None] | None = None
        self.fence: tuple[str, int] | None = None  # (member id, generation) while this instance leads
        self.reachable = False
        self.last_error = ""
        self.revision = 0
        self._kv: dict[str, tuple[bytes, int, int]] = {}  # key below the prefix -> (value, mod rev, create rev)
        self.taps: dict[int, Tap] = {}
        self._by_name: dict[str, Tap] = {}  # `taps` by name (plan_changes reads the names an apply declares)
        self._tokens: dict[int, dict] = {}
        self._token_by_hash: dict[str, int] = {}
        self.hosts: dict[str, Host] = {}
        self.links: list[Link] = []
        self.pins: dict[int, str] = {}  # dpid -> the certificate fingerprint pinned for it
        self.members: dict[str, dict] = {}
        self.leader: tuple[str, int] | None = None  # (member id, generation = create revision of the key)
        self.status: dict = {}
        self._secrets: dict[str, bytes] = {}
        self._client_index = 0
        self._clients: dict[int, aetcd.Client] = {}
        self._outbox: dict[str, bytes | None] = {}
        self._outbox_ready = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._watch_task: asyncio.Task | None = None

    @classmethod
    def from_url(cls, url: str, state_dir: str | Path, tls_files: tuple = (None, None, None), **kw: Any) -> EtcdStore:
        """The store `--store URL` names: `etcds://` with `tls_files` (CA, certificate,
        key), `etcd://` without. ValueError naming the URL or the flag that is wrong."""
        endpoints = parse_endpoints(url)
        if is_tls(url):
            return cls(endpoints, state_dir, tls=EtcdTLS.from_files(*tls_files), **kw)
        if any(tls_files):
            raise ValueError(f"--store {url} is plain etcd://, but --etcd-ca/--etcd-cert/--etcd-key were given: use etcds://")
        return cls(endpoints, state_dir, **kw)

    def __repr__(self) -> str:
        return ("etcds://" if self.tls else "etcd://") + ",".join(f"{h}:{p}" for h, p in self.endpoints)

    # ---- connection --------------------------------------------------------------------

    def _key(self, name: str) -> bytes:
        return (self.prefix + name).encode()

    async def _client(self) -> aetcd.Client:
        index = self._client_index % len(self.endpoints)
        client = self._clients.get(index)
        if client is None:
            host, port = self.endpoints[index]
            client = self._clients[index] = EtcdClient(host, port, self.timeout, self.tls)
        await client.connect()
        return client

    async def _call(self, what: str, fn: Callable[[aetcd.Client], Any]) -> Any:
        """Run `fn(client)`, trying each endpoint once; StoreUnavailable when none answers."""
        error = ""
        for _ in range(len(self.endpoints)):
            client = await self._client()
            try:
                result = await fn(client)
            except (aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError) as exc:
                error = str(exc) or type(exc).__name__
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise StoreUnavailable(f"etcd refused {what}: {exc.details()}") from None
                error = exc.details() or exc.code().name
            except aetcd.exceptions.ClientError as exc:
                raise StoreUnavailable(f"etcd refused {what}: {exc}") from None
            else:
                self.reachable = True
                return result
            self._client_index += 1
        self.reachable = False
        self.last_error = f"etcd unreachable at {', '.join(f'{h}:{p}' for h, p in self.endpoints)}: {error}"
        raise StoreUnavailable(self.last_error)

    async def _txn(self, what: str, compare: list, success: list) -> int | None:
        """The revision the transaction committed at, or None when a compare failed."""
        async def txn(client: aetcd.Client):
            return await client.kvstub.Txn(rpc.TxnRequest(compare=compare, success=success), timeout=self.timeout,
                                           metadata=client.metadata)
        response = await self._call(what, txn)
        return response.header.revision if response.succeeded else None

    # ---- lifecycle ---------------------------------------------------------------------

    async def open(self, secret_names: tuple[str, ...] = ("lldp",)) -> None:
        """Read the whole store (StoreUnavailable when etcd does not answer), make the
        named secrets, and start following changes."""
        await self._resync()
        for name in secret_names:
            await self._ensure_secret(name)
        self._watch_task = asyncio.create_task(self._watch(), name="etcd-watch")
        self._tasks = [asyncio.create_task(self._publish_loop(), name="etcd-publish"),
                       asyncio.create_task(self._probe_loop(), name="etcd-probe")]

    async def aclose(self) -> None:
        await shut(self._tasks + ([self._watch_task] if self._watch_task else []), list(self._clients.values()))

    async def _resync(self) -> None:
        """Read every key again: the copy becomes what etcd holds now."""
        got = await self._call("a read", lambda c: c.get_prefix(self.prefix.encode()))
        revision = got.header.revision
        seen = set()
        for kv in got.kvs:
            name = kv.key.decode()[len(self.prefix):]
            if name.startswith("audit/"):
                continue
            seen.add(name)
            self._apply(name, kv.value, kv.mod_revision, kv.create_revision)
        for name in [n for n, (_, rev, _) in self._kv.items() if n not in seen and rev < revision]:
            self._apply(name, None, revision, 0)
        self.revision = max(self.revision, revision)

    async def _watch(self) -> None:
        while True:
            try:
                client = await self._client()
                watch = await client.watch_prefix(self.prefix.encode(), start_revision=self.revision + 1)
                async for event in watch:
                    name = event.kv.key.decode()[len(self.prefix):]
                    self.revision = max(self.revision, event.kv.mod_revision)
                    if name.startswith("audit/"):
                        continue
                    value = event.kv.value if event.kind == "PUT" else None
                    self._apply(name, value, event.kv.mod_revision, event.kv.create_revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken stream, a compacted revision: read again, watch again
                log.warning("etcd watch ended (%s); reading the store again", exc or type(exc).__name__)
                await asyncio.sleep(0.5)
                self._client_index += 1
                try:
                    await self._resync()
                except StoreUnavailable:
                    pass

    async def _probe_loop(self) -> None:
        """Notice etcd going away and coming back: when it returns, read everything again
        and restart the watch (a stream to a dead server may hang without an error)."""
        while True:
            await asyncio.sleep(PROBE_S)
            was = self.reachable
            try:
                await self._call("a probe", lambda c: c.get(self._key(TAPS_META)))
            except StoreUnavailable as exc:
                if was:
                    log.error("%s; reads go on from the last copy, writes are refused", exc)
                continue
            if not was:
                log.warning("etcd answers again at %r: reading the store again", self)
                if self._watch_task:
                    self._watch_task.cancel()
                try:
                    await self._resync()
                except StoreUnavailable:
                    continue
                self._watch_task = asyncio.create_task(self._watch(), name="etcd-watch")
                self._outbox_ready.set()

    # ---- the copy ---------------------------------------------------------------------------

    def _apply(self, name: str, value: bytes | None, revision: int, create_revision: int) -> None:
        """Take one key's new value into the copy (older news is ignored) and tell the listener."""
        old = self._kv.get(name)
        if old is not None and old[1] >= revision:
            return
        if value is None:
            if old is None:
                return
            del self._kv[name]
        else:
            self._kv[name] = (value, revision, create_revision or (old[2] if old else revision))
            if old is not None and old[0] == value:
                return
        change = self._parse(name, value, revision)
        if change is not None and self.listener is not None:
            try:
                self.listener(change)
            except Exception:
                log.exception("store listener failed on %s", change)

    def _parse(self, name: str, value: bytes | None, revision: int) -> KeyChange | None:
        folder, _, rest = name.partition("/")
        data = json.loads(value) if value is not None and folder != "secrets" and folder != LEADER else None
        if folder == "taps":
            tap_id = int(rest)
            if value is None:
                index_name(self._by_name, self.taps.pop(tap_id, None), None)
                return KeyChange("tap", rest, None, revision)
            tap = Tap.of(tap_id, TapSpec.model_validate(data))
            index_name(self._by_name, self.taps.get(tap_id), tap)
            self.taps[tap_id] = tap
            return KeyChange("tap", rest, tap, revision)
        if folder == "tokens":
            old = self._tokens.pop(int(rest), None)
            if old is not None:
                self._token_by_hash.pop(old["hash"], None)
            if data is not None:
                self._tokens[int(rest)] = data
                self._token_by_hash[data["hash"]] = int(rest)
            return None
        if folder == "hosts":
            host = Host(rest, tuple(data["ips"]), data["dpid"], data["port"], data["last_seen"]) if data else None
            _keep(self.hosts, rest, host)
            return KeyChange("host", rest, host, revision)
        if folder == "pins":
            _keep(self.pins, int(rest, 16), data["fingerprint"] if data else None)
            return None  # read when a switch connects
        if folder == LINKS:
            self.links = [Link(*l) for l in data] if data else []
            return KeyChange(LINKS, "", list(self.links), revision)
        if folder == "members":
            _keep(self.members, rest, data)
            return KeyChange("member", rest, data, revision)
        if folder == LEADER:
            self.leader = (value.decode(), self._kv[name][2]) if value is not None else None
            return KeyChange(LEADER, "", self.leader, revision)
        if folder == STATUS:
            self.status = data or {}
            return None  # read by the API from `status`; nothing to tell the listener
        if folder == "secrets" and value is not None:
            self._secrets[rest] = bytes.fromhex(value.decode())
        return None

    def _applied(self, revision: int, ops: list) -> None:
        """Take a committed transaction's puts and deletes into the copy."""
        for op in ops:
            if op.HasField("request_put"):
                self._apply(op.request_put.key.decode()[len(self.prefix):], op.request_put.value, revision, 0)
            else:
                self._apply(op.request_delete_range.key.decode()[len(self.prefix):], None, revision, 0)
        self.revision = max(self.revision, revision)

    def revision_of(self, name: str) -> int:
        """The revision at which a key last changed (0: absent)."""
        got = self._kv.get(name)
        return got[1] if got else 0

    def tap_revision(self, tap_id: int) -> int:
        return self.revision_of(f"taps/{tap_id}")

    # ---- secrets, hosts, links: read at start; hosts and links published by the leader -------

    async def _ensure_secret(self, name: str) -> None:
        if name in self._secrets:
            return
        key, value = self._key(f"secrets/{name}"), secrets_.token_bytes(32).hex().encode()
        ops = [put_op(key, value)]
        revision = await self._txn("a secret", [create_is(key, 0)], ops)
        if revision is None:
            await self._resync()  # another instance made it first: take theirs
        else:
            self._applied(revision, ops)

    def secret(self, name: str) -> bytes:
        """A secret made once for the whole cluster (made by `open`)."""
        return self._secrets[name]

    def load_hosts(self) -> list[Host]:
        return sorted(self.hosts.values(), key=lambda h: h.mac)

    def load_links(self) -> list[Link]:
        return sorted(self.links)

    def load_taps(self) -> list[Tap]:
        return sorted(self.taps.values(), key=lambda t: t.id)

    def save_hosts(self, hosts: list[Host]) -> None:
        for h in hosts:
            self._queue(f"hosts/{h.mac}", _dumps({"ips": list(h.ips), "dpid": h.dpid, "port": h.port, "last_seen": h.last_seen}))

    def delete_hosts(self, macs: list[str]) -> None:
        for mac in macs:
            self._queue(f"hosts/{mac}", None)

    def pin_of(self, dpid: int) -> str | None:
        return self.pins.get(dpid)

    def save_pin(self, dpid: int, fingerprint: str) -> None:
        """Published by the leader, as hosts and links are."""
        self._queue(f"pins/{dpid:016x}", _dumps({"fingerprint": fingerprint, "pinned": time.time()}))

    async def delete_pin(self, dpid: int) -> None:
        if dpid not in self.pins:
            raise NotFound(dpid)
        ops = [delete_op(self._key(f"pins/{dpid:016x}"))]
        self._applied(await self._txn("a pin's removal", [], ops), ops)

    def save_links(self, links) -> None:
        self._queue(LINKS, _dumps(sorted([l.src_dpid, l.src_port, l.dst_dpid, l.dst_port] for l in links)))

    def publish_status(self, status: dict) -> None:
        """The policies' states as the leader sees them, for the followers to show."""
        self._queue(STATUS, _dumps(status))

    def _queue(self, name: str, value: bytes | None) -> None:
        self._outbox[name] = value
        self._outbox_ready.set()

    async def _publish_loop(self) -> None:
        """Write what the leader published, coalesced, fenced by the leader key."""
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            await asyncio.sleep(0.02)  # let a burst (hosts learned together) gather
            while self._outbox:
                if self.fence is None:
                    self._outbox.clear()  # not the leader (any more): nothing of ours to publish
                    break
                names = list(self._outbox)[:PUBLISH_OPS]
                batch = {n: self._outbox.pop(n) for n in names}
                ops = [put_op(self._key(n), v) if v is not None else delete_op(self._key(n)) for n, v in batch.items()]
                member, generation = self.fence
                fence = [rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.VALUE, key=self._key(LEADER),
                                     value=member.encode()), create_is(self._key(LEADER), generation)]
                try:
                    revision = await self._txn("a publication", fence, ops)
                except StoreUnavailable as exc:
                    for n, v in batch.items():
                        self._outbox.setdefault(n, v)  # newer news queued meanwhile wins
                    log.debug("publication deferred: %s", exc)
                    break  # the probe sets the event again when etcd is back
                if revision is None:
                    log.warning("publication refused: this instance no longer holds leadership %d", generation)
                    self._outbox.clear()
                    break
                self._applied(revision, ops)

    # ---- tokens ------------------------------------------------------------------------------

    async def _write(self, meta: str, what: str, plan: Callable[[int], tuple[list, int, Any]]) -> Any:
        """An optimistic write: `plan(next_id)` -> (ops, next id after it, result), planned on the
        copy and committed only if `meta` is still at the revision planned against."""
        for _ in range(WRITE_ATTEMPTS):
            got = self._kv.get(meta)
            revision = got[1] if got else 0
            next_id = json.loads(got[0])["next_id"] if got else 1
            try:
                ops, after, result = plan(next_id)
            except (NameTaken, NotFound, ValueError):
                if await self._stale(meta, revision):
                    continue  # planned on an old copy: the refusal may be wrong
                raise
            ops = ops + [put_op(self._key(meta), _dumps({"next_id": after}))]
            committed = await self._txn(what, [mod_is(self._key(meta), revision)], ops)
            if committed is not None:
                self._applied(committed, ops)
                return result
            await self._resync()  # another instance wrote first: plan again on its result
        raise StoreUnavailable(f"{what} kept conflicting with other writers; try again")

    async def _stale(self, meta: str, revision: int) -> bool:
        got = await self._call("a read", lambda c: c.get(self._key(meta)))
        if (got.mod_revision if got else 0) == revision:
            return False
        await self._resync()
        return True

    async def add_token(self, name: str, role: str, scope: dict | None, token_hash: str, expires_at: float | None) -> dict:
        def plan(next_id: int):
            record = {"name": name, "role": role, "scope": scope, "hash": token_hash, "created": time.time(),
                      "expires_at": expires_at}
            return [put_op(self._key(f"tokens/{next_id}"), _dumps(record))], next_id + 1, next_id
        token_id = await self._write(TOKENS_META, "a token", plan)
        return self._token_out(token_id)

    def _token_out(self, token_id: int) -> dict:
        t = self._tokens[token_id]
        return {"id": token_id, "name": t["name"], "role": t["role"], "scope": t["scope"], "created": t["created"],
                "expires_at": t["expires_at"]}

    def token_by_hash(self, token_hash: str) -> dict | None:
        token_id = self._token_by_hash.get(token_hash)
        return self._token_out(token_id) if token_id is not None else None

    def list_tokens(self) -> list[dict]:
        return [self._token_out(i) for i in sorted(self._tokens)]

    async def delete_token(self, token_id: int) -> None:
        def plan(next_id: int):
            if token_id not in self._tokens:
                raise NotFound(token_id)
            return [delete_op(self._key(f"tokens/{token_id}"))], next_id, None
        await self._write(TOKENS_META, "a token's revocation", plan)

    # ---- audit ---------------------------------------------------------------------------------

    async def append_audit(self, record: dict) -> dict:
        """Append one record to the chain; the record as chained."""
        return (await self._append_batch([record]))[0]

    async def append_audits(self, records: list[dict]) -> None:
        """Append records to the chain in order, up to AUDIT_BATCH per transaction (etcd
        limits a transaction's operations): sequence and hash from the head, compared on
        its revision. Another writer may append between two batches; each batch is whole.
        Only a batch's chained records are alive at a time (see the SQLite store's)."""
        for start in range(0, len(records), AUDIT_BATCH):
            await self._append_batch(records[start:start + AUDIT_BATCH])

    async def _append_batch(self, records: list[dict]) -> list[dict]:
        for _ in range(WRITE_ATTEMPTS):
            got = self._kv.get(AUDIT_HEAD)
            revision = got[1] if got else 0
            head = json.loads(got[0]) if got else {"seq": 0, "hash": audit.GENESIS}
            seq, prev, recs = head["seq"], head["hash"], []
            for record in records:
                rec = {**audit.plain(record), "seq": seq + 1, "prev_hash": prev}
                rec["hash"] = audit.record_hash(rec, prev)
                recs.append(rec)
                seq, prev = rec["seq"], rec["hash"]
            ops = [put_op(self._key(f"audit/{r['seq']:012d}"), _dumps(r)) for r in recs]
            ops.append(put_op(self._key(AUDIT_HEAD), _dumps({"seq": seq, "hash": prev})))
            committed = await self._txn("audit records", [mod_is(self._key(AUDIT_HEAD), revision)], ops)
            if committed is not None:
                self._applied(committed, ops)
                return recs
            got = await self._call("a read", lambda c: c.get(self._key(AUDIT_HEAD)))
            if got:
                self._apply(AUDIT_HEAD, got.value, got.mod_revision, got.create_revision)
        raise StoreUnavailable("an audit record kept conflicting with other writers")

    async def audit_records(self, *, since: int = 0, actor: str | None = None, target: str | None = None,
                            limit: int | None = None) -> list[dict]:
        start, end = self._key(f"audit/{since + 1:012d}"), self._key("audit0")  # '0' follows '/'
        got = await self._call("a read", lambda c: c.get_range(start, end))
        out = []
        for kv in got.kvs:
            rec = json.loads(kv.value)
            if (actor is None or rec["actor"] == actor) and (target is None or rec["target"] == target):
                out.append(rec)
                if limit is not None and len(out) >= limit:
                    break
        return out

    # ---- TAP policies ------------------------------------------------------------------------

    def _spec_op(self, tap_id: int, spec: TapSpec) -> Any:
        return put_op(self._key(f"taps/{tap_id}"), spec.model_dump_json().encode())

    def _name_taken(self, name: str, but: int | None = None) -> bool:
        tap = self._by_name.get(name)
        return tap is not None and tap.id != but

    async def add_tap(self, spec: TapSpec) -> Tap:
        def plan(next_id: int):
            if self._name_taken(spec.name):
                raise NameTaken(spec.name)
            return [self._spec_op(next_id, spec)], next_id + 1, Tap.of(next_id, spec)
        return await self._write(TAPS_META, "a policy", plan)

    async def update_tap(self, tap_id: int, spec: TapSpec) -> Tap:
        def plan(next_id: int):
            if tap_id not in self.taps:
                raise NotFound(tap_id)
            if self._name_taken(spec.name, but=tap_id):
                raise NameTaken(spec.name)
            return [self._spec_op(tap_id, spec)], next_id, Tap.of(tap_id, spec)
        return await self._write(TAPS_META, "a policy", plan)

    async def delete_tap(self, tap_id: int) -> None:
        def plan(next_id: int):
            if tap_id not in self.taps:
                raise NotFound(tap_id)
            return [delete_op(self._key(f"taps/{tap_id}"))], next_id, None
        await self._write(TAPS_META, "a policy's removal", plan)

    async def replace_taps(self, specs: list[TapSpec], *, prune: bool) -> PolicyPlan:
        """Make the stored set equal to `specs` by name, in one transaction (etcd's
        --max-txn-ops and --max-request-bytes bound how many policies one apply holds)."""
        def plan(next_id: int):
            p = plan_changes(self._by_name, specs, prune=prune).numbered(next_id)
            ops = [self._spec_op(t.id, t.spec) for t in p.added] + [self._spec_op(a.id, a.spec) for _, a in p.changed]
            ops += [delete_op(self._key(f"taps/{t.id}")) for t in p.removed]
            return ops, next_id + len(p.added), p
        return await self._write(TAPS_META, "an apply", plan)

    # ---- membership and leadership (driven by vtap.control.cluster) -------------------------------

    async def grant_lease(self, ttl: int) -> int:
        lease = await self._call("a lease", lambda c: c.lease(ttl))
        return lease.id

    async def refresh_lease(self, lease_id: int) -> int:
        """The lease's remaining TTL after the refresh (0: it had expired)."""
        reply = await self._call("a lease refresh", lambda c: c.refresh_lease(lease_id))
        return reply.TTL

    async def register(self, member: str, info: dict, lease_id: int) -> None:
        ops = [put_op(self._key(f"members/{member}"), _dumps(info), lease_id)]
        revision = await self._txn("a membership", [], ops)
        self._applied(revision, ops)

    async def campaign(self, member: str, lease_id: int) -> int | None:
        """Take the leader key if nobody holds it: the generation (its create revision), or None."""
        ops = [put_op(self._key(LEADER), member.encode(), lease_id)]
        revision = await self._txn("a campaign", [create_is(self._key(LEADER), 0)], ops)
        if revision is None:
            return None
        self._applied(revision, ops)
        return revision

    async def resign(self, member: str, generation: int) -> None:
        """Give up the leader key, if it is still this instance's."""
        key = self._key(LEADER)
        fence = [rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.VALUE, key=key, value=member.encode()),
                 create_is(key, generation)]
        await self._txn("a resignation", fence, [delete_op(key)])
