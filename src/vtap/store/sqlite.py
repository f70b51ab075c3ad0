"""SQLite persistence of what the controller must not forget across restarts.

Learned hosts are kept so that a restarted controller compiles the same rules at
once, instead of tearing down forwarding until every host speaks again. Each write
is its own transaction; WAL mode keeps the file consistent across crashes.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from vtap.model.network import Host

SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    mac TEXT PRIMARY KEY,
    ips TEXT NOT NULL,
    dpid INTEGER NOT NULL,
    port INTEGER NOT NULL,
    last_seen REAL NOT NULL
);
"""


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
