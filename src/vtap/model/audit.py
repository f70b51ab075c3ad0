"""The audit trail's chain: each record carries the hash of the one before it.

Editing, inserting or deleting a record breaks the chain from there on, and `verify`
names the first record where it breaks. Two limits, said plainly: removing the newest
records leaves a shorter chain that still verifies, and the chain has no key, so whoever
can write the database can rewrite every hash after an edit. It shows tampering by
anyone who reaches vtap through its API, not by root on its machine.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

FIELDS = ("seq", "time", "actor", "remote", "action", "target", "before", "after", "result")
GENESIS = "0" * 64


def plain(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its `before` and `after` as JSON data. A bulk change's records
    carry the policies themselves (frozen models), made into JSON where the records are
    chained and written, off the event loop: 100,000 of them made there held it for a
    second."""
    return {**record, "before": _json_data(record.get("before")), "after": _json_data(record.get("after"))}


def policy_record(action: str, tap_id: int, before: Any, after: Any) -> dict[str, Any]:
    """One policy's own record within a request that changed several (its history stays
    whole): the policies themselves, made into JSON where the record is written
    (`plain`, `chained`), off the event loop."""
    return {"action": action, "target": f"tap:{tap_id}", "before": before, "after": after}


def _json_data(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if dump is not None else value


def record_hash(record: dict[str, Any], prev_hash: str) -> str:
    """SHA-256 over the previous hash and the record's fields in a canonical JSON form."""
    return _sha256(prev_hash, _canonical({k: record.get(k) for k in FIELDS}))


def chained(record: dict[str, Any], seq: int, prev_hash: str) -> tuple[str, str, str]:
    """(before, after, hash) of `record` chained as number `seq` after `prev_hash`: its
    `before` and `after` in the canonical JSON form, and the hash `record_hash` gives the
    record once they are JSON data. Each policy is encoded once, for the hash and the row
    alike (a bulk change chains 100,000 records: encoding each policy twice, and the
    whole record again, took a second)."""
    before, after = _canonical(_json_data(record.get("before"))), _canonical(_json_data(record.get("after")))
    rest = _canonical({**{k: record.get(k) for k in FIELDS}, "seq": seq, "before": None, "after": None})
    # Keys sorted, `after` and `before` are neighbours; inside a string value a quote is
    # escaped, so the first match is the two keys themselves.
    body = rest.replace(_EMPTY_SLOTS, f'"after":{after},"before":{before}', 1)
    return before, after, _sha256(prev_hash, body)


_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode
_EMPTY_SLOTS = '"after":null,"before":null'


def _sha256(prev_hash: str, body: str) -> str:
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def verify(records: list[dict[str, Any]]) -> tuple[bool, int | None, str]:
    """(intact, seq of the first broken record, why) over records in sequence order."""
    prev = GENESIS
    expected_seq = records[0]["seq"] if records else 1
    for rec in records:
        if rec["seq"] != expected_seq:
            return False, rec["seq"], f"record {expected_seq} is missing"
        if rec["prev_hash"] != prev:
            return False, rec["seq"], "its prev_hash is not the hash of the record before it"
        if record_hash(rec, prev) != rec["hash"]:
            return False, rec["seq"], "its content does not match its hash (edited)"
        prev = rec["hash"]
        expected_seq += 1
    return True, None, f"{len(records)} records, chain intact"
