"""The lab's mesh topologies: ring with chords and random 3-regular graphs."""

from __future__ import annotations

import pytest

from vtap.lab.topos import host_params, parse_topo


def switch_graph(topo) -> dict[int, set[int]]:
    """dpid -> neighbouring dpids, from the Topo's inter-switch links."""
    dpid = {n: int(topo.nodeInfo(n)["dpid"], 16) for n in topo.switches()}
    graph: dict[int, set[int]] = {d: set() for d in dpid.values()}
    for a, b in topo.links():
        if a in dpid and b in dpid:
            graph[dpid[a]].add(dpid[b])
            graph[dpid[b]].add(dpid[a])
    return graph


def connected(graph: dict[int, set[int]]) -> bool:
    start = next(iter(graph))
    seen, todo = {start}, [start]
    while todo:
        for other in graph[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return len(seen) == len(graph)


def inter_switch_links(topo) -> list[tuple[str, str]]:
    switches = set(topo.switches())
    return [(a, b) for a, b in topo.links() if a in switches and b in switches]


def check_mesh(topo, n: int) -> None:
    """N switches dpid 1..N, 3N/2 simple links, degree 3, connected, host i on switch i."""
    graph = switch_graph(topo)
    assert sorted(graph) == list(range(1, n + 1))
    assert len(inter_switch_links(topo)) == 3 * n // 2  # and so no parallel links: degree counts distinct neighbours
    assert all(len(neighbours) == 3 and d not in neighbours for d, neighbours in graph.items())
    assert connected(graph)
    assert len(topo.hosts()) == n
    for i in range(1, n + 1):
        info = topo.nodeInfo(f"h{i}")
        assert (info["ip"], info["mac"]) == (host_params(i)["ip"], host_params(i)["mac"])
        assert topo.port(f"h{i}", f"s{i}") == (0, 1)  # the host link is the switch's port 1


@pytest.mark.parametrize("n", [4, 8, 12])
def test_ring_with_chords(n):
    topo = parse_topo(f"ring,{n}")
    check_mesh(topo, n)
    graph = switch_graph(topo)
    for i in range(1, n + 1):
        assert graph[i] == {i % n + 1, (i - 2) % n + 1, (i - 1 + n // 2) % n + 1}


def test_ring_8_has_8_switches_and_12_links():
    topo = parse_topo("ring,8")
    assert len(topo.switches()) == 8 and len(inter_switch_links(topo)) == 12


@pytest.mark.parametrize("n", [4, 6, 10, 20, 50])
def test_random_regular(n):
    check_mesh(parse_topo(f"random,{n},7"), n)


def test_random_regular_is_the_same_for_a_seed_and_differs_between_seeds():
    assert switch_graph(parse_topo("random,20,3")) == switch_graph(parse_topo("random,20,3"))
    graphs = [switch_graph(parse_topo(f"random,20,{seed}")) for seed in range(6)]
    assert sum(g != graphs[0] for g in graphs[1:]) >= 4


def test_seed_zero_and_negative_seeds_are_seeds():
    check_mesh(parse_topo("random,8,0"), 8)
    check_mesh(parse_topo("random,8,-3"), 8)


@pytest.mark.parametrize("spec, problem", [
    ("ring,5", "even number >= 4"),
    ("ring,2", "even number >= 4"),
    ("ring,0", "N must be a positive integer"),
    ("ring", "takes 1 parameter"),
    ("ring,8,1", "takes 1 parameter"),
    ("random,7,1", "even number >= 4"),
    ("random,2,1", "even number >= 4"),
    ("random,8", "takes 2 parameter(s): random,N,SEED"),
    ("random,8,x", "must be integers"),
    ("random,-8,1", "N must be a positive integer"),
    ("torus,4", "unknown topology 'torus'"),
])
def test_bad_specs_name_the_problem(spec, problem):
    with pytest.raises(ValueError) as err:
        parse_topo(spec)
    assert problem in str(err.value)


def test_unknown_topology_lists_every_shape():
    with pytest.raises(ValueError) as err:
        parse_topo("torus,4")
    for usage in ("single,N", "linear,N", "tree,DEPTH,FANOUT", "fattree,K", "ring,N", "random,N,SEED"):
        assert usage in str(err.value)
