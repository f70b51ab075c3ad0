"""Overlapping TAP matches, made disjoint for a single OpenFlow table.

A packet meets exactly one rule in a table: the highest-priority match. When two
policies overlap (the same flow to two monitors; a wide policy and a narrow one), the
packets in the overlap must get both policies' copies, once each. So the set of
policy matches is closed under intersection, and each *region* (a match in that
closure) becomes one rule whose priority grows with its specificity and whose copy
group serves every policy whose match contains the region. A packet then hits the
most specific region containing it, which is the intersection of all the policies it
matches.

A constraint is a prefix on an integer field: (value, prefix length). Exact values
are prefixes of full width. Overlap checks and superset lookups join on projections
(values truncated to the shorter prefix), per pair of *shapes* (which fields, at
which prefix lengths), so non-overlapping policies cost linear time, not quadratic.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable

# field -> width in bits
WIDTHS = {
    "in_port": 32,
    "eth_src": 48,
    "eth_dst": 48,
    "eth_type": 16,
    "vlan_vid": 13,
    "ip_proto": 8,
    "ipv4_src": 32,
    "ipv4_dst": 32,
    "ipv6_src": 128,
    "ipv6_dst": 128,
    "l4_src": 16,
    "l4_dst": 16,
}

# A region: ((field, value, prefix_len), ...) sorted by field name.
Region = tuple[tuple[str, int, int], ...]
Shape = tuple[tuple[str, int], ...]


def region(constraints: dict[str, tuple[int, int]]) -> Region:
    out = []
    for name, (value, plen) in sorted(constraints.items()):
        width = WIDTHS[name]
        if plen != width:
            value &= ((1 << plen) - 1) << (width - plen) if plen else 0
        out.append(_field(name, value, plen))
    return tuple(out)


@functools.lru_cache(maxsize=65536)
def _field(name: str, value: int, plen: int) -> tuple[str, int, int]:
    """One field of a region, one object for every region that has it (the protocol,
    a port, an address), not a copy each: 0.4 KiB of every policy."""
    return name, value, plen


def shape(r: Region) -> Shape:
    return tuple((f, p) for f, _, p in r)


def specificity(r: Region) -> int:
    """Bits constrained: a strict sub-region always has more."""
    return sum(p for _, _, p in r)


def _project(r: Region, fields: dict[str, int]) -> tuple[int, ...]:
    """Values of the given fields, truncated to the given prefix lengths."""
    d = {f: v for f, v, _ in r}
    return tuple([d[f] >> (WIDTHS[f] - p) for f, p in fields.items()])  # values are masked: p = 0 gives 0


def _projector(s: Shape, fields: dict[str, int]) -> list[tuple[int, int]]:
    """`_project` for every region of shape `s` at once: (position in the region, shift)."""
    at = {f: i for i, (f, _) in enumerate(s)}
    return [(at[f], WIDTHS[f] - p) for f, p in fields.items()]


def intersect(a: Region, b: Region) -> Region:
    d = {f: (v, p) for f, v, p in a}
    for f, v, p in b:
        if f not in d or d[f][1] < p:
            d[f] = (v, p)
    return region(d)


def _common(sa: Shape, sb: Shape) -> dict[str, int]:
    pb = dict(sb)
    return {f: min(p, pb[f]) for f, p in sa if f in pb}


def closure(matches: Iterable[Region], limit: int = 200_000) -> set[Region]:
    """All non-empty intersections of the given matches (the matches included)."""
    known: set[Region] = set(matches)
    by_shape: dict[Shape, set[Region]] = defaultdict(set)
    for r in known:
        by_shape[shape(r)].add(r)
    frontier = set(known)
    while frontier:
        fresh: set[Region] = set()
        front_by_shape: dict[Shape, list[Region]] = defaultdict(list)
        for r in frontier:
            front_by_shape[shape(r)].append(r)
        for sa, group in front_by_shape.items():
            for sb, others in list(by_shape.items()):
                if sb == sa:
                    continue  # two regions of one shape are equal or disjoint: no intersection
                common = _common(sa, sb)
                index: dict[tuple[int, ...], list[Region]] = defaultdict(list)
                plan = _projector(sb, common)
                for b in others:
                    index[tuple([b[i][1] >> shift for i, shift in plan])].append(b)
                plan = _projector(sa, common)
                for a in group:
                    for b in index.get(tuple([a[i][1] >> shift for i, shift in plan]), ()):
                        if a == b:
                            continue
                        c = intersect(a, b)
                        if c not in known and c not in fresh:
                            fresh.add(c)
        if len(known) + len(fresh) > limit:
            raise OverflowError(f"overlapping TAP policies need more than {limit} rules on one switch")
        for c in fresh:
            known.add(c)
            by_shape[shape(c)].add(c)
        frontier = fresh
    return known


def owners(regions: Iterable[Region], matches: dict[Region, set]) -> dict[Region, frozenset]:
    """For each region, the union of the owners of every match that contains it."""
    by_shape: dict[Shape, dict[tuple[int, ...], set]] = defaultdict(dict)
    for m, who in matches.items():
        s = shape(m)
        by_shape[s].setdefault(tuple([v >> (WIDTHS[f] - p) for f, v, p in m]), set()).update(who)
    regions_by_shape: dict[Shape, list[Region]] = defaultdict(list)
    for r in regions:
        regions_by_shape[shape(r)].append(r)
    out: dict[Region, frozenset] = {}
    for sr, group in regions_by_shape.items():
        fields = dict(sr)
        # the match shapes that can contain regions of this shape, and where to look
        plans = [(index, _projector(sr, dict(s))) for s, index in by_shape.items()
                 if all(f in fields and fields[f] >= p for f, p in s)]
        for r in group:
            acc: set = set()
            for index, plan in plans:
                acc.update(index.get(tuple([r[i][1] >> shift for i, shift in plan]), ()))
            # A region that is a match, owned by its owners alone (the usual case): that
            # very set of them, not a copy (216 bytes a region).
            known = matches.get(r)
            out[r] = known if isinstance(known, frozenset) and known == acc else frozenset(acc)
    return out


class RegionIndex:
    """A set of regions that answers "which of you overlap this one?" without a scan:
    regions by shape, and per pair of shapes a projection index (values truncated to
    their common prefixes), built when first asked and kept up to date after. Two
    regions of one shape (the same fields at the same prefix lengths) overlap only if
    they are equal, so the usual question, a region of a shape already there, needs no
    index: it had one, an identity map of every region (~1 KiB a policy at 10,000).
    Copies share nothing mutable, so a copy may change while the original stays."""

    def __init__(self, regions: Iterable[Region] = ()) -> None:
        self._proj: dict[tuple[Shape, tuple[tuple[str, int], ...]], dict[tuple[int, ...], frozenset[Region]]] = {}
        grouped: dict[Shape, set[Region]] = defaultdict(set)
        for r in regions:
            grouped[shape(r)].add(r)
        self._by_shape: dict[Shape, frozenset[Region]] = {s: frozenset(rs) for s, rs in grouped.items()}

    def copy(self) -> RegionIndex:
        other = RegionIndex()
        other._by_shape = dict(self._by_shape)
        other._proj = {k: dict(v) for k, v in self._proj.items()}
        return other

    def add(self, r: Region) -> None:
        s = shape(r)
        self._by_shape[s] = self._by_shape.get(s, frozenset()) | {r}
        for (sb, common), index in self._proj.items():
            if sb == s:
                key = _project(r, dict(common))
                index[key] = index.get(key, frozenset()) | {r}

    def remove(self, r: Region) -> None:
        s = shape(r)
        left = self._by_shape[s] - {r}
        if left:
            self._by_shape[s] = left
        else:
            del self._by_shape[s]
        for (sb, common), index in list(self._proj.items()):
            if sb == s:
                if not left:
                    del self._proj[(sb, common)]
                    continue
                key = _project(r, dict(common))
                rest = index[key] - {r}
                if rest:
                    index[key] = rest
                else:
                    del index[key]

    def overlapping(self, m: Region) -> set[Region]:
        sm = shape(m)
        out: set[Region] = set()
        for sb, members in self._by_shape.items():
            if sb == sm:
                if m in members:
                    out.add(m)
                continue
            common = _common(sm, sb)
            key = (sb, tuple(common.items()))
            index = self._proj.get(key)
            if index is None:
                grouped: dict[tuple[int, ...], set[Region]] = defaultdict(set)
                plan = _projector(sb, common)
                for b in members:
                    grouped[tuple([b[i][1] >> shift for i, shift in plan])].add(b)
                index = self._proj[key] = {k: frozenset(v) for k, v in grouped.items()}
            out.update(index.get(_project(m, common), ()))
        return out


def overlaps(a: Region, b: Region) -> bool:
    """Some packet matches both."""
    d = {f: (v, p) for f, v, p in a}
    for f, v, p in b:
        if f in d:
            w, q = d[f]
            n = min(p, q)
            if n and (v ^ w) >> (WIDTHS[f] - n):
                return False
    return True


def reclose(old_regions: RegionIndex, new_matches: dict[Region, frozenset], match_index: RegionIndex,
            changed: Iterable[Region], limit: int = 200_000) -> tuple[set[Region], dict[Region, frozenset]]:
    """The closure after some matches were added, removed or changed owners (`changed`;
    `match_index` and `new_matches` already as they are now): (regions that go, regions
    that come or change owners, with their owners).

    Only regions overlapping a changed match can change: a region is the intersection of
    the matches containing it, and a match containing a region overlaps whatever the
    region overlaps. So the regions overlapping the change are those of the closure of
    the matches overlapping it, and every other region stays, with its owners."""
    changed = list(changed)
    near = set().union(*(match_index.overlapping(m) for m in changed))
    local = {r for r in closure(near, limit) if any(overlaps(r, m) for m in changed)}
    gone = set().union(*(old_regions.overlapping(m) for m in changed))
    return gone, owners(local, {n: new_matches[n] for n in near})
