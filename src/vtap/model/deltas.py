"""What changed among the policies since the last look: the event stream's deltas.

The web UI's stream once sent every policy each second; at 100,000 policies that is
tens of megabytes a second to say that almost nothing moved. A `Ledger` keeps the last
row seen of each policy (its fields, in `FIELDS` order) and, as rows are looked at
again, gathers what differs: policies new to it (whole), fields that moved (only
those), policies gone (their ids). `take()` hands that over and starts afresh, so an
event carries what changed since the one before, and a reader that applies every delta
in order to the snapshot it began with holds the ledger's rows (property tested in
tests/unit/test_deltas.py). The ledger also keeps the count of policies by status, for the summary.

Pure: no clock, no I/O; the stream (`api/events.py`) decides when to look and when to take.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

# A policy's row: what the stream says of it besides its id (see api/events.py).
FIELDS = ("name", "enabled", "status", "status_reason", "packets", "bytes", "sent", "delivered", "copies",
          "dropped", "pool", "snaplen", "sample", "rate_limit_pps", "transport", "collector", "tunnel_key",
          "erspan_version", "received", "alerts")
STATUS = FIELDS.index("status")

Row = tuple  # one value per FIELDS entry


def entry(tap_id: int, row: Row) -> dict[str, Any]:
    """A whole row as the stream writes it."""
    return {"id": tap_id, **dict(zip(FIELDS, row))}


def moved(old: Row, new: Row) -> dict[str, Any]:
    """The fields whose value differs between two rows of one policy, with the new value."""
    return {name: b for name, a, b in zip(FIELDS, old, new) if a != b}


@dataclass
class Delta:
    """What changed since the last `take()`: whole rows of policies new to the reader,
    the moved fields of the others, the ids of those gone."""

    added: dict[int, Row] = field(default_factory=dict)
    changed: dict[int, dict[str, Any]] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def only(self, ids: set[int]) -> Delta:
        """The part of the delta about these policies (what one reader watches), in time
        proportional to the smaller of the two."""
        return Delta(_within(self.added, ids), _within(self.changed, ids), self.removed & ids)


class Ledger:
    """The last row of every policy looked at, and what changed since the last take."""

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        self.by_status: Counter[str] = Counter()
        self.set_version = 0  # moves whenever a policy comes or goes (a reader's page may change)
        self._pending = Delta()

    def look(self, tap_id: int, row: Row) -> None:
        """The policy's row now; noted for the next delta if it is new or moved."""
        old = self.rows.get(tap_id)
        if old == row:
            return
        self.rows[tap_id] = row
        self._pending.removed.discard(tap_id)
        if old is None:
            self.by_status[row[STATUS]] += 1
            self.set_version += 1
            self._pending.added[tap_id] = row
            return
        if old[STATUS] != row[STATUS]:
            self._count_out(old[STATUS])
            self.by_status[row[STATUS]] += 1
        if tap_id in self._pending.added:
            self._pending.added[tap_id] = row  # still new to the reader: the whole row again
        else:
            self._pending.changed.setdefault(tap_id, {}).update(moved(old, row))

    def drop(self, gone: Iterable[int]) -> None:
        """These policies are no more."""
        for tap_id in gone:
            old = self.rows.pop(tap_id, None)
            if old is None:
                continue
            self._count_out(old[STATUS])
            self.set_version += 1
            self._pending.added.pop(tap_id, None)
            self._pending.changed.pop(tap_id, None)
            self._pending.removed.add(tap_id)

    def take(self) -> Delta:
        """What changed since the last take; the next delta starts empty."""
        delta, self._pending = self._pending, Delta()
        return delta

    def summary(self) -> dict[str, Any]:
        """How many policies, how many in each status (those with none left out), and the
        set's version: a reader showing a page of the policies fetches it again when it
        moves (the total alone may not: one policy gone and another come)."""
        return {"total": len(self.rows), "by_status": dict(sorted(self.by_status.items())), "set_version": self.set_version}

    def _count_out(self, status: str) -> None:
        self.by_status[status] -= 1
        if not self.by_status[status]:
            del self.by_status[status]


def _within(found: dict[int, Any], ids: set[int]) -> dict[int, Any]:
    if len(ids) < len(found):
        return {i: found[i] for i in ids if i in found}
    return {i: v for i, v in found.items() if i in ids}
