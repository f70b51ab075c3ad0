"""The SQLite store's audit rows: records chained and written, in this process or, for a
bulk change's many records, in a child process on the machine's other core.

A `PUT` of 100,000 policies audits 100,001 records. Chained here, in the store's writer
thread, they took ~2.5 s of the one interpreter lock the whole compile and the event
loop need at that very moment. `python -m vtap.store.audit_rows DB` reads them, one JSON
line each, chains and writes them with the same code, and holds none of their
objects in the controller afterwards. This module imports the standard library and
`vtap.model.audit` only, so that the child starts in ~30 ms.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from vtap.model import audit

COLUMNS = ("seq", "time", "actor", "remote", "action", "target", "before", "after", "result", "prev_hash", "hash")
TXN = 2_000  # records to a transaction (its rows: the write lock held ~20 ms, what a POST may wait)
CHILD_MIN = 5_000  # records of one append chained by a child process
# A transaction's rows in one statement, from one JSON array of arrays: SQLite reads them
# without the interpreter lock. Bound row by row (`executemany`), each row took the lock
# back from the whole compile running in its thread: 100,000 records took 19 s beside a
# busy thread instead of 2 s (measured).
_INSERT = (f"INSERT INTO audit ({', '.join(COLUMNS)}) SELECT "
           + ", ".join(f"value->>{i}" for i in range(len(COLUMNS))) + " FROM json_each(?)")


def append(db: sqlite3.Connection, records: list[dict]) -> dict | None:
    """`records` chained and written, `TXN` a transaction; the last one as chained.
    Each slice is chained from the head as read before its transaction, and the write
    lock taken only for the rows: the loop's own writes (a POST's) wait for it. If
    another process appended meanwhile, the slice is chained again inside.

    Only a slice's chained records are alive at a time: all of a PUT's (a dict and two
    JSON documents per policy) outlived the whole compile that ran beside them in its
    thread, and once freed they left the pages they had shared with it part empty (a
    settled controller held some 30 MiB more at 10,000 policies)."""
    last = None
    for start in range(0, len(records), TXN):
        part = records[start:start + TXN]
        head = audit_head(db)
        last, rows = _chain(part, *head)
        with db:
            db.execute("BEGIN IMMEDIATE")
            now = audit_head(db)
            if now != head:
                last, rows = _chain(part, *now)
            db.execute(_INSERT, (rows,))
    return last


def append_in_child(path: Path, records: list[dict]) -> None:
    """`append` in a child process, for many records: they go to it as JSON lines, each
    policy as pydantic writes it (`model_dump_json`: the data `model_dump(mode="json")`
    gives, which is what the chain hashes), `TXN` lines at a time (all of a PUT's at
    once were 50 MB of text, twice). RuntimeError naming the child's last words if it
    fails; then none, some or all of the transactions may be in (each whole)."""
    with subprocess.Popen([sys.executable, "-m", __name__, str(path)], stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as child:
        try:
            for start in range(0, len(records), TXN):
                child.stdin.write("".join(_line(r) + "\n" for r in records[start:start + TXN]).encode())
            child.stdin.close()
        except BrokenPipeError:
            pass  # it stopped reading: what it says is below
        errors = child.stderr.read()
    if child.returncode != 0:
        said = errors.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"audit records not written by the child process (exit {child.returncode}): "
                           f"{said[-1] if said else 'nothing said'}")


def audit_head(db: sqlite3.Connection) -> tuple[int, str]:
    """The next record's (seq, prev_hash)."""
    last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (last[0] + 1, last[1]) if last else (1, audit.GENESIS)


def _chain(records: list[dict], seq: int, prev: str) -> tuple[dict | None, str]:
    """Records chained from (seq, prev_hash): the last one as chained, and their rows as
    one JSON array of arrays (`_INSERT`)."""
    rows, row = [], None
    for record in records:
        before, after, digest = audit.chained(record, seq, prev)
        row = [seq, record["time"], record["actor"], record["remote"], record["action"], record["target"],
               before, after, record["result"], prev, digest]
        rows.append(row)
        seq, prev = seq + 1, digest
    last = None if row is None else {**dict(zip(COLUMNS, row)), "before": json.loads(row[6]), "after": json.loads(row[7])}
    return last, json.dumps(rows)


def _line(record: dict) -> str:
    """A record as one JSON line: `[the rest, before, after]`."""
    rest = {k: v for k, v in record.items() if k not in ("before", "after")}
    return f"[{json.dumps(rest)},{_json_text(record.get('before'))},{_json_text(record.get('after'))}]"


def _json_text(value) -> str:
    dump = getattr(value, "model_dump_json", None)
    return dump() if dump is not None else json.dumps(value)


def _main(path: str) -> None:
    """Each `TXN` lines chained and written as soon as they are read, while the parent
    is still making the next ones (read whole first, the records waited for the last
    line, then took the child's ~3.5 s of chaining at 100,000: the `PUT` is answered
    only once they are in)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 30000")
    try:
        records = []
        for line in sys.stdin.buffer:
            rest, before, after = json.loads(line)
            records.append({**rest, "before": before, "after": after})
            if len(records) == TXN:
                append(db, records)
                records = []
        append(db, records)
    finally:
        db.close()


if __name__ == "__main__":
    _main(sys.argv[1])
