"""SQLite persistence of what the controller must not forget across restarts: the
embedded default store (`--state-dir`, nothing else to install).

It keeps the interface of `vtap.store.base.PolicyStore`, as the etcd store
(`vtap.store.etcd`) does, so that the two are interchangeable: writes that the API waits
for are coroutines, here completing at once.

TAP policies are the operator's declarations: each change is one transaction, and a
name collision or any failure leaves the stored set as it was. Learned hosts are kept so that a restarted controller compiles the same rules at
once, instead of tearing down forwarding until every host speaks again. Each write
is its own transaction; WAL mode keeps the file consistent across crashes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
import time

from vtap.model.network import Host, Link
from vtap.model.policy import Tap, PolicyPlan, TapSpec, plan_changes
from vtap.store import audit_rows
from vtap.store.errors import NameTaken, NotFound

SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    mac TEXT PRIMARY KEY,
    ips TEXT NOT NULL,
    dpid INTEGER NOT NULL,
    port INTEGER NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS links (
    src_dpid INTEGER NOT NULL,
    src_port INTEGER NOT NULL,
    dst_dpid INTEGER NOT NULL,
    dst_port INTEGER NOT NULL,
    PRIMARY KEY (src_dpid, src_port, dst_dpid, dst_port)
);
CREATE TABLE IF NOT EXISTS switch_pins (
    dpid TEXT PRIMARY KEY,  -- 16 hex digits: a datapath id is 64 bits unsigned, beyond SQLite's INTEGER
    fingerprint TEXT NOT NULL,
    pinned REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    scope TEXT,
    hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    remote TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT,
    result TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS taps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""


log = logging.getLogger(__name__)

NAMES_PER_QUERY = 500  # names in one `IN (...)` of a bulk apply's read (SQLite allows 32,766 parameters)


def _append_audits(db: sqlite3.Connection, records: list[dict], path: Path) -> dict | None:
    """In the writer thread: `records` chained and written (`audit_rows`); many of them
    by a child process, off this one's interpreter lock."""
    if len(records) >= audit_rows.CHILD_MIN:
        audit_rows.append_in_child(path, records)
        return None
    return audit_rows.append(db, records)


def _replace_rows(db: sqlite3.Connection, sql: str, rows: list[tuple], first: str | None = None) -> None:
    """In the writer thread: `first` (a statement, if any), then `sql` for every row, in one transaction."""
    with db:
        db.execute("BEGIN")
        if first:
            db.execute(first)
        db.executemany(sql, rows)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class Store:
    reachable = True  # a local file: there is no "away" (a disk error is an exception where it happens)
    last_error = ""
    def __init__(self, state_dir: str | Path):
        self.state_dir = Path(state_dir)  # the database and local files (admin token, captures)
        self.path = self.state_dir / "vtap.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One thread at a time uses it: the loop's, or (`vtap serve` at its start, before
        # the controller exists) a worker thread loading the policies, so that the loop
        # can answer the switches meanwhile.
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        # Each stored policy as last parsed or written, with a digest of its JSON: a bulk
        # apply reads the stored policies it names in its transaction, and parsing 5,000
        # specs anew each time held the event loop ~120 ms; a row whose text is the same
        # is not parsed again. The Tap objects are those the controller holds (loaded,
        # added, changed here), not copies, and a digest, not the text: a second copy of
        # every policy cost ~2.6 KiB each (26 MiB at 10,000).
        self._parsed: dict[int, tuple[bytes, Tap]] = {}
        self._taps_turn = asyncio.Lock()  # writes of policies, one at a time (replace_taps)
        # The writes the event loop must not wait for (a bulk apply's rows, audit records,
        # the hosts and links seen) go, in the order asked, to one worker thread with a
        # connection of its own: the loop never waits for a write lock one of them holds
        # (a few hosts written on the loop waited 0.9-1.6 s for an audit's transactions).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._writer_db: sqlite3.Connection | None = None  # made in the writer thread

    def _write(self, fn, *args) -> Future:
        """Run `fn(db, *args)` in the writer thread, after every write asked before it."""
        def run():
            if self._writer_db is None:
                self._writer_db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            return fn(self._writer_db, *args)
        return self._writer.submit(run)

    def _write_behind(self, what: str, fn, *args) -> None:
        """A write nobody waits for (the hosts and links seen): a failure is logged."""
        def done(future: Future) -> None:
            if future.exception() is not None:
                log.error("%s not written: %s", what, future.exception())
        self._write(fn, *args).add_done_callback(done)

    def _written(self) -> None:
        """Every write asked so far is done (before a read of what they wrote)."""
        self._write(lambda db: None).result()

    def _tap(self, ident: int, text: str) -> Tap:
        known, digest = self._parsed.get(ident), _digest(text)
        if known is None or known[0] != digest:
            known = self._parsed[ident] = (digest, Tap.of(ident, TapSpec.model_validate_json(text)))
        return known[1]

    def __repr__(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self._writer.shutdown(wait=True)  # what was asked is written first
        self.db.close()
        if self._writer_db is not None:
            self._writer_db.close()

    def secret(self, name: str) -> bytes:
        """A random secret made once and kept (the LLDP key): the same after a restart."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
            if row is not None:
                return bytes(row[0])
            value = secrets.token_bytes(32)
            self.db.execute("INSERT INTO secrets (name, value) VALUES (?, ?)", (name, value))
            return value

    def load_hosts(self) -> list[Host]:
        self._written()
        rows = self.db.execute("SELECT mac, ips, dpid, port, last_seen FROM hosts ORDER BY mac")
        return [Host(mac, tuple(json.loads(ips)), dpid, port, last_seen) for mac, ips, dpid, port, last_seen in rows]

    def save_hosts(self, hosts: list[Host]) -> None:
        rows = [(h.mac, json.dumps(list(h.ips)), h.dpid, h.port, h.last_seen) for h in hosts]
        self._write_behind("hosts", _replace_rows, "INSERT OR REPLACE INTO hosts (mac, ips, dpid, port, last_seen) VALUES (?, ?, ?, ?, ?)", rows)

    def pin_of(self, dpid: int) -> str | None:
        """The certificate fingerprint pinned for a datapath id (see Controller.switch_connected)."""
        row = self.db.execute("SELECT fingerprint FROM switch_pins WHERE dpid = ?", (f"{dpid:016x}",)).fetchone()
        return row[0] if row else None

    def save_pin(self, dpid: int, fingerprint: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO switch_pins (dpid, fingerprint, pinned) VALUES (?, ?, ?)",
                            (f"{dpid:016x}", fingerprint, time.time()))

    async def delete_pin(self, dpid: int) -> None:
        """Forget a switch's pinned certificate (NotFound if none): its next connection pins anew."""
        with self.db:
            cur = self.db.execute("DELETE FROM switch_pins WHERE dpid = ?", (f"{dpid:016x}",))
        if cur.rowcount == 0:
            raise NotFound(dpid)

    def load_links(self) -> list[Link]:
        """The inter-switch links last proven by LLDP: a restarted controller starts from them."""
        self._written()
        rows = self.db.execute("SELECT src_dpid, src_port, dst_dpid, dst_port FROM links ORDER BY 1, 2, 3, 4")
        return [Link(*row) for row in rows]

    def save_links(self, links) -> None:
        """Replace the stored links with these, in one transaction."""
        rows = [(l.src_dpid, l.src_port, l.dst_dpid, l.dst_port) for l in links]
        self._write_behind("links", _replace_rows, "INSERT INTO links (src_dpid, src_port, dst_dpid, dst_port) VALUES (?, ?, ?, ?)",
                           rows, "DELETE FROM links")

    def delete_hosts(self, macs: list[str]) -> None:
        self._write_behind("hosts deleted", _replace_rows, "DELETE FROM hosts WHERE mac = ?", [(m,) for m in macs])

    # ---- tokens -------------------------------------------------------------------

    async def add_token(self, name: str, role: str, scope: dict | None, token_hash: str, expires_at: float | None) -> dict:
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            cur = self.db.execute(
                "INSERT INTO tokens (name, role, scope, hash, created, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, role, json.dumps(scope) if scope is not None else None, token_hash, now, expires_at),
            )
        return self._token_row((cur.lastrowid, name, role, json.dumps(scope) if scope is not None else None, now, expires_at))

    def token_by_hash(self, token_hash: str) -> dict | None:
        row = self.db.execute("SELECT id, name, role, scope, created, expires_at FROM tokens WHERE hash = ?", (token_hash,)).fetchone()
        return self._token_row(row) if row else None

    def list_tokens(self) -> list[dict]:
        return [self._token_row(r) for r in self.db.execute("SELECT id, name, role, scope, created, expires_at FROM tokens ORDER BY id")]

    async def delete_token(self, token_id: int) -> None:
        with self.db:
            self.db.execute("BEGIN")
            cur = self.db.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
        if cur.rowcount == 0:
            raise NotFound(token_id)

    @staticmethod
    def _token_row(row) -> dict:
        token_id, name, role, scope, created, expires_at = row
        return {"id": token_id, "name": name, "role": role, "scope": json.loads(scope) if scope else None,
                "created": created, "expires_at": expires_at}

    # ---- audit ----------------------------------------------------------------------

    async def append_audit(self, record: dict) -> dict:
        """Append one record to the chain (sequence and hashes assigned in one
        transaction); the record as chained."""
        return await asyncio.wrap_future(self._write(audit_rows.append, [record]))

    async def append_audits(self, records: list[dict]) -> None:
        """Append records to the chain in order (a bulk change's per-policy records:
        `audit_rows.TXN` to a commit, not one each), in the writer thread, and from
        `audit_rows.CHILD_MIN` records on by a child process.

        Chaining (canonical JSON and a hash per record) and writing take some 20 us a
        record. On the loop, the 100,000 records of one `PUT` held it for seconds; with a
        whole compile running beside it in its thread, each of SQLite's steps gave the
        interpreter lock away, and the loop was gone for more than five seconds: Open
        vSwitch's inactivity probe went unanswered and every switch dropped its
        connection. Here, each transaction's rows are one statement, and a bulk change's
        records are chained off this process's interpreter lock altogether."""
        await asyncio.wrap_future(self._write(_append_audits, records, self.path))

    async def audit_records(self, *, since: int = 0, actor: str | None = None, target: str | None = None, limit: int | None = None) -> list[dict]:
        sql = "SELECT seq, time, actor, remote, action, target, before, after, result, prev_hash, hash FROM audit WHERE seq > ?"
        args: list = [since]
        if actor is not None:
            sql += " AND actor = ?"
            args.append(actor)
        if target is not None:
            sql += " AND target = ?"
            args.append(target)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        out = []
        for row in self.db.execute(sql, args):
            rec = dict(zip(audit_rows.COLUMNS, row))
            rec["before"], rec["after"] = json.loads(rec["before"]), json.loads(rec["after"])
            out.append(rec)
        return out

    # ---- TAP policies -------------------------------------------------------------

    def load_taps(self) -> list[Tap]:
        self._parsed = {}
        return [self._tap(i, spec) for i, spec in self.db.execute("SELECT id, spec FROM taps ORDER BY id")]

    def _remember(self, tap: Tap, text: str) -> Tap:
        self._parsed[tap.id] = (_digest(text), tap)
        return tap

    def _named(self, db: sqlite3.Connection, names: list[str]) -> list[Tap]:
        """The stored policies of these names (by the name index, a slice of names at a time)."""
        rows = []
        for start in range(0, len(names), NAMES_PER_QUERY):
            chunk = names[start:start + NAMES_PER_QUERY]
            rows += db.execute(f"SELECT id, spec FROM taps WHERE name IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        return [self._tap(i, spec) for i, spec in rows]

    async def add_tap(self, spec: TapSpec) -> Tap:
        async with self._taps_turn:  # not in the middle of a bulk apply (replace_taps)
            now = time.time()
            try:
                with self.db:
                    self.db.execute("BEGIN")
                    text = spec.model_dump_json()
                    cur = self.db.execute("INSERT INTO taps (name, spec, created, updated) VALUES (?, ?, ?, ?)",
                                          (spec.name, text, now, now))
            except sqlite3.IntegrityError:
                raise NameTaken(spec.name) from None
            return self._remember(Tap(id=cur.lastrowid, spec=spec), text)

    async def update_tap(self, tap_id: int, spec: TapSpec) -> Tap:
        async with self._taps_turn:  # not in the middle of a bulk apply (replace_taps)
            try:
                with self.db:
                    self.db.execute("BEGIN")
                    text = spec.model_dump_json()
                    cur = self.db.execute("UPDATE taps SET name = ?, spec = ?, updated = ? WHERE id = ?",
                                          (spec.name, text, time.time(), tap_id))
            except sqlite3.IntegrityError:
                raise NameTaken(spec.name) from None
            if cur.rowcount == 0:
                raise NotFound(tap_id)
            return self._remember(Tap(id=tap_id, spec=spec), text)

    async def replace_taps(self, specs: list[TapSpec], *, prune: bool) -> PolicyPlan:
        """Make the stored set equal to `specs` by name, in one transaction (see
        `plan_changes`); changed policies keep their ids. Nothing changes when anything
        fails. Without `prune` only the stored policies the set names are read: a batch
        of 1,000 among 100,000 read all 100,000 (170 ms each, and growing).

        Planned and written in a worker thread, on a connection of its own, while this
        store's other writes of policies wait their turn: at 100,000 the plan, the JSON
        and the rows held the event loop for four seconds, near Open vSwitch's 5 s
        inactivity probe."""
        async with self._taps_turn:
            return await asyncio.wrap_future(self._write(self._replace_taps, specs, prune))

    def _replace_taps(self, db: sqlite3.Connection, specs: list[TapSpec], prune: bool) -> PolicyPlan:
        """In the writer thread. Read and planned before the write transaction (this
        store's writes of policies wait for `_taps_turn` meanwhile), so that the write
        lock, which the loop's own writes of policies wait for, is held only for the
        rows themselves."""
        now = time.time()
        if prune:
            stored = [self._tap(i, spec) for i, spec in db.execute("SELECT id, spec FROM taps")]
            self._parsed = {t.id: self._parsed[t.id] for t in stored}  # rows gone, gone here too
        else:
            stored = self._named(db, [s.name for s in specs])
        plan = plan_changes({t.spec.name: t for t in stored}, specs, prune=prune)
        added_texts = [tap.spec.model_dump_json() for tap in plan.added]
        changed_texts = [after.spec.model_dump_json() for _, after in plan.changed]
        with db:
            db.execute("BEGIN IMMEDIATE")
            # The ids AUTOINCREMENT would give, one after the other (SQLite moves its
            # sequence past explicit ids): one statement for all rows, not one each.
            first = db.execute("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'taps'), 0), "
                               "coalesce((SELECT max(id) FROM taps), 0)) + 1").fetchone()[0]
            plan = plan.numbered(first)
            db.executemany("INSERT INTO taps (id, name, spec, created, updated) VALUES (?, ?, ?, ?, ?)",
                           [(tap.id, tap.spec.name, text, now, now) for tap, text in zip(plan.added, added_texts)])
            db.executemany("UPDATE taps SET spec = ?, updated = ? WHERE id = ?",
                           [(text, now, after.id) for (_, after), text in zip(plan.changed, changed_texts)])
            db.executemany("DELETE FROM taps WHERE id = ?", [(tap.id,) for tap in plan.removed])
        # Committed: only now are the written policies the ones this store knows.
        for tap, text in zip(plan.added, added_texts):
            self._remember(tap, text)
        for (_, after), text in zip(plan.changed, changed_texts):
            self._remember(after, text)
        for tap in plan.removed:
            self._parsed.pop(tap.id, None)
        return plan

    async def delete_tap(self, tap_id: int) -> None:
        async with self._taps_turn:  # not in the middle of a bulk apply (replace_taps)
            with self.db:
                self.db.execute("BEGIN")
                cur = self.db.execute("DELETE FROM taps WHERE id = ?", (tap_id,))
            self._parsed.pop(tap_id, None)
            if cur.rowcount == 0:
                raise NotFound(tap_id)

    def tap_revision(self, tap_id: int) -> int:
        """When the policy's row was last written, in microseconds (0: no such policy): it
        changes with every write of the policy, as etcd's revision of its key does."""
        row = self.db.execute("SELECT updated FROM taps WHERE id = ?", (tap_id,)).fetchone()
        return round(row[0] * 1_000_000) if row else 0

    def publish_status(self, status: dict) -> None:
        """Nothing to do: a standalone controller has no followers to show the policies'
        states to (the etcd store publishes them for a cluster's followers)."""
