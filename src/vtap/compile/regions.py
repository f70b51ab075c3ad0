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
        value &= ((1 << plen) - 1) << (width - plen) if plen else 0
        out.append((name, value, plen))
    return tuple(out)


def shape(r: Region) -> Shape:
    return tuple((f, p) for f, _, p in r)


def specificity(r: Region) -> int:
    """Bits constrained: a strict sub-region always has more."""
    return sum(p for _, _, p in r)


def _project(r: Region, fields: dict[str, int]) -> tuple[int, ...]:
    """Values of the given fields, truncated to the given prefix lengths."""
    d = {f: v for f, v, _ in r}
    return tuple(d[f] >> (WIDTHS[f] - p) if p else 0 for f, p in fields.items())


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
                common = _common(sa, sb)
                index: dict[tuple[int, ...], list[Region]] = defaultdict(list)
                for b in others:
                    index[_project(b, common)].append(b)
                for a in group:
                    for b in index.get(_project(a, common), ()):
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
        by_shape[s].setdefault(_project(m, dict(s)), set()).update(who)
    out: dict[Region, frozenset] = {}
    for r in regions:
        fields = {f: p for f, _, p in r}
        acc: set = set()
        for s, index in by_shape.items():
            if all(f in fields and fields[f] >= p for f, p in s):
                acc.update(index.get(_project(r, dict(s)), ()))
        out[r] = frozenset(acc)
    return out
