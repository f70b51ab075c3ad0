"""Data-centre and mesh topologies for the lab, with hosts h1..hN at 10.0.0.i/8 and MAC 00:00:00:00:00:i.

Switch datapath ids are set explicitly (switch names in a fat-tree repeat digits) and
port numbers follow link order, so a topology always comes up the same.
"""

from __future__ import annotations

import random

from mininet.topo import Topo


def host_params(i: int) -> dict:
    return {"ip": f"10.0.0.{i}/8" if i < 255 else f"10.0.{i // 256}.{i % 256}/8", "mac": f"00:00:00:00:{i // 256:02x}:{i % 256:02x}"}


class VtapTopo(Topo):
    """A Topo whose hosts are numbered in creation order."""

    def build(self, *args, **kwargs) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def host(self, i: int) -> str:
        return self.addHost(f"h{i}", **host_params(i))

    def switch(self, name: str, dpid: int) -> str:
        return self.addSwitch(name, dpid=f"{dpid:016x}")


class SingleTopo(VtapTopo):
    """One switch, N hosts."""

    def build(self, n: int) -> None:
        s1 = self.switch("s1", 1)
        for i in range(1, n + 1):
            self.addLink(self.host(i), s1)


class LinearTopo(VtapTopo):
    """N switches in a chain, one host on each."""

    def build(self, n: int) -> None:
        prev = None
        for i in range(1, n + 1):
            s = self.switch(f"s{i}", i)
            self.addLink(self.host(i), s)
            if prev:
                self.addLink(prev, s)
            prev = s


class TreeTopo(VtapTopo):
    """A tree of the given depth and fanout; hosts at the leaves."""

    def build(self, depth: int, fanout: int) -> None:
        self._switches = 0
        self._hosts = 0
        self._add(depth, fanout)

    def _add(self, depth: int, fanout: int) -> str:
        if depth == 0:
            self._hosts += 1
            return self.host(self._hosts)
        self._switches += 1
        s = self.switch(f"s{self._switches}", self._switches)
        for _ in range(fanout):
            self.addLink(s, self._add(depth - 1, fanout))
        return s


class FatTreeTopo(VtapTopo):
    """Al-Fares et al.'s k-ary fat-tree: (k/2)^2 core, k pods of k/2 aggregation and k/2
    edge switches, k/2 hosts per edge switch. k=4: 20 switches, 16 hosts.

    Datapath ids: core 0x01xx, aggregation 0x02PP0x, edge 0x03PP0x (PP = pod).
    """

    def build(self, k: int) -> None:
        if k < 2 or k % 2:
            raise ValueError("fat-tree k must be an even number >= 2")
        half = k // 2
        cores = [self.switch(f"c{i + 1}", 0x0100 + i + 1) for i in range(half * half)]
        host_no = 0
        for pod in range(k):
            aggs = [self.switch(f"a{pod * half + j + 1}", 0x020000 + (pod << 8) + j + 1) for j in range(half)]
            edges = [self.switch(f"e{pod * half + j + 1}", 0x030000 + (pod << 8) + j + 1) for j in range(half)]
            for j, edge in enumerate(edges):
                for _ in range(half):
                    host_no += 1
                    self.addLink(self.host(host_no), edge)
                for agg in aggs:
                    self.addLink(edge, agg)
            for j, agg in enumerate(aggs):
                for c in range(half):
                    self.addLink(agg, cores[j * half + c])


class RingTopo(VtapTopo):
    """N switches in a ring, each also linked to the switch opposite (i to i+N/2): every
    switch has three links, as in a small mesh, and every pair of switches two or more
    disjoint paths. One host on each switch; switch si has dpid i."""

    def build(self, n: int) -> None:
        if n < 4 or n % 2:
            raise ValueError(f"ring N must be an even number >= 4, got {n}")
        switches = [self.switch(f"s{i}", i) for i in range(1, n + 1)]
        for i, s in enumerate(switches, start=1):
            self.addLink(self.host(i), s)
        for i in range(n):
            self.addLink(switches[i], switches[(i + 1) % n])
        for i in range(n // 2):
            self.addLink(switches[i], switches[i + n // 2])


class RandomRegularTopo(VtapTopo):
    """A random connected 3-regular graph of N switches, the same for the same seed: no
    structure a controller could be tuned to. One host on each switch; si has dpid i."""

    def build(self, n: int, seed: int) -> None:
        if n < 4 or n % 2:
            raise ValueError(f"random N must be an even number >= 4 (a 3-regular graph needs one), got {n}")
        switches = [self.switch(f"s{i}", i) for i in range(1, n + 1)]
        for i, s in enumerate(switches, start=1):
            self.addLink(self.host(i), s)
        for a, b in random_regular_edges(n, 3, random.Random(seed)):
            self.addLink(switches[a], switches[b])


def random_regular_edges(n: int, degree: int, rng: random.Random) -> list[tuple[int, int]]:
    """Edges (a < b, sorted) of a random connected simple `degree`-regular graph on nodes
    0..n-1, by the configuration model: pair the nodes' `degree` stubs at random, and draw
    again until the pairing has no self loop, no parallel edge and one component. For
    degree 3 about one pairing in eight is simple, so this takes a few draws."""
    while True:
        stubs = [node for node in range(n) for _ in range(degree)]
        rng.shuffle(stubs)
        edges = {tuple(sorted(pair)) for pair in zip(stubs[::2], stubs[1::2])}
        simple = len(edges) == n * degree // 2 and all(a != b for a, b in edges)
        if simple and _connected(n, edges):
            return sorted(edges)


def _connected(n: int, edges: set[tuple[int, int]]) -> bool:
    neighbours: dict[int, list[int]] = {node: [] for node in range(n)}
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    seen, todo = {0}, [0]
    while todo:
        for other in neighbours[todo.pop()]:
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return len(seen) == n


# Each shape's parameters; all are positive integers but a seed, which is any integer.
SHAPES = {
    "single": (SingleTopo, ("N",)),
    "linear": (LinearTopo, ("N",)),
    "tree": (TreeTopo, ("DEPTH", "FANOUT")),
    "fattree": (FatTreeTopo, ("K",)),
    "ring": (RingTopo, ("N",)),
    "random": (RandomRegularTopo, ("N", "SEED")),
}
USAGE = " | ".join(",".join((name, *params)) for name, (_, params) in SHAPES.items())


def parse_topo(spec: str) -> VtapTopo:
    """`single,N` | `linear,N` | `tree,DEPTH,FANOUT` | `fattree,K` | `ring,N` |
    `random,N,SEED` -> a Topo."""
    name, *args = spec.split(",")
    if name not in SHAPES:
        raise ValueError(f"unknown topology {name!r}: use {USAGE}")
    cls, params = SHAPES[name]
    try:
        nums = [int(a) for a in args]
    except ValueError:
        raise ValueError(f"topology {spec!r}: parameters must be integers") from None
    if len(nums) != len(params):
        raise ValueError(f"topology {spec!r}: {name} takes {len(params)} parameter(s): {','.join((name, *params))}")
    for param, num in zip(params, nums):
        if param != "SEED" and num < 1:
            raise ValueError(f"topology {spec!r}: {param} must be a positive integer")
    return cls(*nums)
