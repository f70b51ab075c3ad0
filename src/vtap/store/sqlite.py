"""SQLite persistence of what the controller must not forget across restarts.

TAP policies are the operator's declarations: each change is one transaction, and a
name collision or any failure leaves the stored set as it was. Learned hosts are kept so that a restarted controller compiles the same rules at
once, instead of tearing down forwarding until every host speaks again. Each write
is its own transaction; WAL mode keeps the file consistent across crashes.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path

import time

from vtap.model.network import Host
from vtap.model.policy import Tap, TapSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    mac TEXT PRIMARY KEY,
    ips TEXT NOT NULL,
    dpid INTEGER NOT NULL,
    port INTEGER NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS taps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""


class NameTaken(Exception):
    """Another policy already has this name."""


class NotFound(Exception):
    """No policy with this id."""


class Store:
    def __init__(self, state_dir: str | Path):
        self.path = Path(state_dir) / "vtap.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def secret(self, name: str, size: int = 32) -> bytes:
        """A random secret made once and kept (the LLDP key): the same after a restart."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
            if row is not None:
                return bytes(row[0])
            value = secrets.token_bytes(size)
            self.db.execute("INSERT INTO secrets (name, value) VALUES (?, ?)", (name, value))
            return value

    def load_hosts(self) -> list[Host]:
        rows = self.db.execute("SELECT mac, ips, dpid, port, last_seen FROM hosts ORDER BY mac")
        return [Host(mac, tuple(json.loads(ips)), dpid, port, last_seen) for mac, ips, dpid, port, last_seen in rows]

    def save_hosts(self, hosts: list[Host]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO hosts (mac, ips, dpid, port, last_seen) VALUES (?, ?, ?, ?, ?)",
                [(h.mac, json.dumps(list(h.ips)), h.dpid, h.port, h.last_seen) for h in hosts],
            )

    def delete_hosts(self, macs: list[str]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM hosts WHERE mac = ?", [(m,) for m in macs])

    # ---- TAP policies -------------------------------------------------------------

    def load_taps(self) -> list[Tap]:
        rows = self.db.execute("SELECT id, spec FROM taps ORDER BY id")
        return [Tap(id=i, spec=TapSpec.model_validate_json(spec)) for i, spec in rows]

    def add_tap(self, spec: TapSpec) -> Tap:
        now = time.time()
        try:
            with self.db:
                self.db.execute("BEGIN")
                cur = self.db.execute(
                    "INSERT INTO taps (name, spec, created, updated) VALUES (?, ?, ?, ?)",
                    (spec.name, spec.model_dump_json(), now, now),
                )
        except sqlite3.IntegrityError:
            raise NameTaken(spec.name) from None
        return Tap(id=cur.lastrowid, spec=spec)

    def update_tap(self, tap_id: int, spec: TapSpec) -> Tap:
        try:
            with self.db:
                self.db.execute("BEGIN")
                cur = self.db.execute(
                    "UPDATE taps SET name = ?, spec = ?, updated = ? WHERE id = ?",
                    (spec.name, spec.model_dump_json(), time.time(), tap_id),
                )
        except sqlite3.IntegrityError:
            raise NameTaken(spec.name) from None
        if cur.rowcount == 0:
            raise NotFound(tap_id)
        return Tap(id=tap_id, spec=spec)

    def delete_tap(self, tap_id: int) -> None:
        with self.db:
            self.db.execute("BEGIN")
            cur = self.db.execute("DELETE FROM taps WHERE id = ?", (tap_id,))
        if cur.rowcount == 0:
            raise NotFound(tap_id)
