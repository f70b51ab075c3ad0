"""Matches closed under intersection, kept: a tap switch's policy matches (their
regions become its table-1 rules) and a monitor's switch's recovery matches (its
recovery rules) are both the closure of some owned matches (compile/regions.py), and
the in-place path changes a few of those matches at a time.

Separate because both keepers (compile/taps/switch.py, compile/taps/buckets.py) need
the same bookkeeping, and it knows nothing of rules: regions and owners only.
"""

from __future__ import annotations

from vtap.compile.regions import Region, RegionIndex, closure, owners, reclose

LIMIT = 200_000  # regions on one switch, as `regions.closure`'s


class Closed:
    """Owned matches and the regions of their closure, each with its owners (the owners
    of every match containing it), indexed so that a change recomputes only the regions
    the changed matches overlap (`regions.reclose`)."""

    def __init__(self, matches: dict[Region, frozenset], match_index: RegionIndex, region_index: RegionIndex,
                 owners_: dict[Region, frozenset]) -> None:
        self.matches = matches
        self.match_index = match_index
        self.region_index = region_index
        self.owners = owners_

    @classmethod
    def of(cls, matches: dict[Region, frozenset], regions: set[Region] | None = None,
           owners_: dict[Region, frozenset] | None = None) -> Closed:
        """From scratch (`regions` and `owners_`: the closure and its owners, when known).
        Raises OverflowError when the regions are too many."""
        regions = closure(matches, LIMIT) if regions is None else regions
        owners_ = owners(regions, matches) if owners_ is None else owners_
        return cls(dict(matches), RegionIndex(matches), RegionIndex(regions), dict(owners_))

    def copy(self) -> Closed:
        """One to change while this one stays as it is (a memo may hold it)."""
        return Closed(dict(self.matches), self.match_index.copy(), self.region_index.copy(), dict(self.owners))

    def change(self, changes: dict[Region, frozenset]) -> tuple[set[Region], dict[Region, frozenset]]:
        """The matches in `changes` given new owners (empty: gone); returns the regions
        that went and those that came or changed owners (with them). Raises
        OverflowError when the regions become too many (the closure would)."""
        for r, ids in changes.items():
            if ids:
                if r not in self.matches:
                    self.match_index.add(r)
                self.matches[r] = ids
            elif r in self.matches:
                del self.matches[r]
                self.match_index.remove(r)
        # The region index is the old one until the loops below: asked first, it keeps
        # the projections it builds for the next change.
        gone, fresh = reclose(self.region_index, self.matches, self.match_index, changes, LIMIT)
        for r in gone:
            del self.owners[r]
            self.region_index.remove(r)
        for r, ids in fresh.items():
            self.owners[r] = ids
            self.region_index.add(r)
        if len(self.owners) > LIMIT:
            raise OverflowError(f"overlapping TAP policies need more than {LIMIT} rules on one switch")
        return gone, fresh
