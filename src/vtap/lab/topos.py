"""Data-centre topologies for the lab, with hosts h1..hN at 10.0.0.i/8 and MAC 00:00:00:00:00:i.

Switch datapath ids are set explicitly (switch names in a fat-tree repeat digits) and
port numbers follow link order, so a topology always comes up the same.
"""

from __future__ import annotations

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


def parse_topo(spec: str) -> VtapTopo:
    """`single,N` | `linear,N` | `tree,DEPTH,FANOUT` | `fattree,K` -> a Topo."""
    name, *args = spec.split(",")
    try:
        nums = [int(a) for a in args]
    except ValueError:
        raise ValueError(f"topology {spec!r}: parameters must be integers") from None
    shapes = {"single": (SingleTopo, 1), "linear": (LinearTopo, 1), "tree": (TreeTopo, 2), "fattree": (FatTreeTopo, 1)}
    if name not in shapes:
        raise ValueError(f"unknown topology {name!r}: use single,N | linear,N | tree,DEPTH,FANOUT | fattree,K")
    cls, arity = shapes[name]
    if len(nums) != arity or any(n < 1 for n in nums):
        raise ValueError(f"topology {spec!r}: {name} takes {arity} positive integer parameter(s)")
    return cls(*nums)
