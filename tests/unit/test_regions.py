"""The region index and the closure against brute force: which regions overlap a match,
and every non-empty intersection of a set of matches (compile/regions.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vtap.compile.regions import RegionIndex, closure, intersect, overlaps, region

# Few fields, few prefix lengths and values close together: shapes repeat and overlap.
constraint = st.one_of(
    st.tuples(st.just("ipv4_src"), st.integers(0, 3).map(lambda x: 0x0A000000 | x << 8), st.sampled_from([8, 16, 24, 32])),
    st.tuples(st.just("ipv4_dst"), st.integers(0, 3).map(lambda x: 0x0A000000 | x), st.sampled_from([24, 32])),
    st.tuples(st.just("l4_dst"), st.integers(5000, 5002), st.just(16)),
    st.tuples(st.just("ip_proto"), st.sampled_from([6, 17]), st.just(8)),
)
regions = st.lists(constraint, min_size=1, max_size=3).map(lambda cs: region({f: (v, p) for f, v, p in cs}))


def brute_overlapping(members, m):
    return {r for r in members if overlaps(r, m)}


@settings(max_examples=300, deadline=None)
@given(st.lists(regions, max_size=25), st.lists(regions, max_size=8), st.lists(regions, min_size=1, max_size=8))
def test_the_index_finds_exactly_the_regions_that_overlap(initial, added, asked):
    index = RegionIndex(initial)
    members = set(initial)
    for m in asked:  # asked before a change too: the projections made on demand are kept up to date after
        assert index.overlapping(m) == brute_overlapping(members, m)
    for r in added:
        if r not in members:
            index.add(r)
            members.add(r)
    for r in list(members)[::2]:
        index.remove(r)
        members.discard(r)
    for m in asked + added + initial:
        assert index.overlapping(m) == brute_overlapping(members, m)


def brute_closure(matches):
    known = set(matches)
    while True:
        fresh = {intersect(a, b) for a in known for b in known if a != b and overlaps(a, b)} - known
        if not fresh:
            return known
        known |= fresh


@settings(max_examples=200, deadline=None)
@given(st.lists(regions, max_size=12))
def test_the_closure_is_every_intersection(matches):
    assert closure(matches) == brute_closure(matches)
