"""A snapshot of the global network view, and the paths through it.

The controller's discovery and host tables produce a `NetworkView`; compilation reads
it. Paths are computed here because every consumer (base forwarding, TAP compilation,
the REST API) must agree on them: a tapped flow's copy is made on the same path its
original takes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import cached_property


from vtap.model.network import Device, Host, Link
from vtap.model.policy import is_single_address


@dataclass(frozen=True)
class NetworkView:
    devices: dict[int, Device] = field(default_factory=dict)
    links: frozenset[Link] = frozenset()
    hosts: dict[str, Host] = field(default_factory=dict)
    # Ports known to face a switch even without a live link (see LinkTable).
    switch_ports: frozenset[tuple[int, int]] = frozenset()
    # Addresses (IPs, MACs) that policies pin and that another host claims: the claim is
    # held, the binding kept; address -> why, for the policies that name it.
    conflicts: dict[str, str] = field(default_factory=dict)
    # Up ports whose role is not known yet (see control/roles.py): neither edge nor
    # link; nothing is flooded out of them or forwarded from them.
    unknown_ports: frozenset[tuple[int, int]] = frozenset()

    @cached_property
    def usable_links(self) -> frozenset[Link]:
        """Links seen in both directions between connected switches, on ports that are up.

        A link seen one way only (LLDP just started, or failing) is not used for
        forwarding: a path over it might lead into a port the far side ignores.
        """
        out = set()
        for link in self.links:
            if link.reversed() not in self.links:
                continue
            a, b = self.devices.get(link.src_dpid), self.devices.get(link.dst_dpid)
            if a is None or b is None:
                continue
            pa, pb = a.port(link.src_port), b.port(link.dst_port)
            if pa and pb and pa.up and pb.up:
                out.add(link)
        return frozenset(out)

    @cached_property
    def graph(self) -> dict[int, dict[int, dict[int, int]]]:
        """Switch graph as adjacency: {dpid: {neighbour: {dpid: its port, neighbour: its port}}}."""
        g: dict[int, dict[int, dict[int, int]]] = {d: {} for d in sorted(self.devices)}
        for link in sorted(self.usable_links):
            if link.src_dpid < link.dst_dpid or (
                link.src_dpid == link.dst_dpid and link.src_port < link.dst_port
            ):
                ports = {link.src_dpid: link.src_port, link.dst_dpid: link.dst_port}
                # Parallel links: keep the lowest-numbered pair, deterministically.
                if link.dst_dpid not in g[link.src_dpid]:
                    g[link.src_dpid][link.dst_dpid] = ports
                    g[link.dst_dpid][link.src_dpid] = ports
        return g

    @cached_property
    def link_ports(self) -> dict[int, frozenset[int]]:
        """Ports of each switch that face another switch (known links, usable or not, and
        ports that have faced one until they went down)."""
        out: dict[int, set[int]] = {d: set() for d in self.devices}
        for link in self.links:
            out.setdefault(link.src_dpid, set()).add(link.src_port)
            out.setdefault(link.dst_dpid, set()).add(link.dst_port)
        for dpid, port in self.switch_ports:
            out.setdefault(dpid, set()).add(port)
        return {d: frozenset(p) for d, p in out.items()}

    def edge_ports(self, dpid: int) -> list[int]:
        """Up ports of a switch that face hosts: no switch was ever seen behind them, and
        discovery has had its chance to find one (not `unknown_ports`)."""
        device = self.devices.get(dpid)
        if device is None:
            return []
        links = self.link_ports.get(dpid, frozenset())
        return [p for p in device.up_ports() if p not in links and (dpid, p) not in self.unknown_ports]

    def unknown_ports_of(self, dpid: int) -> list[int]:
        """Up ports of a switch whose role is not known yet."""
        device = self.devices.get(dpid)
        if device is None:
            return []
        links = self.link_ports.get(dpid, frozenset())
        return [p for p in device.up_ports() if p not in links and (dpid, p) in self.unknown_ports]

    def port_toward(self, dpid: int, neighbour: int) -> int:
        return self.graph[dpid][neighbour][dpid]

    @cached_property
    def _trees(self) -> dict[int, dict[int, tuple[int, int]]]:
        return {}

    def tree_toward(self, dst_dpid: int) -> dict[int, tuple[int, int]]:
        """For every switch that can reach `dst_dpid`: (port of its next hop, that next switch).

        A breadth-first tree rooted at the destination, neighbours visited in dpid
        order, so that the choice among equal-cost paths is deterministic and every
        switch's choice is consistent with the others' (destination-based forwarding
        can then never loop).
        """
        trees = self._trees
        if dst_dpid not in trees:
            g = self.graph
            tree: dict[int, tuple[int, int]] = {}
            if dst_dpid in g:
                seen = {dst_dpid}
                queue = deque([dst_dpid])
                while queue:
                    node = queue.popleft()
                    for nb in sorted(g[node]):
                        if nb not in seen:
                            seen.add(nb)
                            tree[nb] = (self.port_toward(nb, node), node)
                            queue.append(nb)
            trees[dst_dpid] = tree
        return trees[dst_dpid]

    @cached_property
    def _paths(self) -> dict[tuple[int, int], list[int] | None]:
        return {}

    def path(self, src_dpid: int, dst_dpid: int) -> list[int] | None:
        """Switches from src to dst, both included, as forwarding takes them; None if unreachable."""
        key = (src_dpid, dst_dpid)
        if key not in self._paths:
            self._paths[key] = self._path(src_dpid, dst_dpid)
        return self._paths[key]

    def _path(self, src_dpid: int, dst_dpid: int) -> list[int] | None:
        if src_dpid == dst_dpid:
            return [src_dpid] if src_dpid in self.devices else None
        tree = self.tree_toward(dst_dpid)
        if src_dpid not in tree:
            return None
        path = [src_dpid]
        while path[-1] != dst_dpid:
            path.append(tree[path[-1]][1])
        return path

    def backup_toward(self, dst_dpid: int) -> dict[int, tuple[int, int]]:
        """For switches that have one: a loop-free alternate next hop toward `dst_dpid`,
        (port, neighbour), for when the tree's next hop fails.

        A neighbour qualifies when its own tree path to the destination does not come
        back through this switch (RFC 5286's loop-free alternate, on the paths forwarding
        actually takes), and does not use the failed link; the lowest dpid wins. Switches
        use it the moment their port goes down, before the controller has recomputed
        anything; a single failure never makes a loop."""
        tree = self.tree_toward(dst_dpid)
        out: dict[int, tuple[int, int]] = {}
        for node, (_, primary) in tree.items():
            for nb in sorted(self.graph[node]):
                if nb == primary:
                    continue
                path = self.path(nb, dst_dpid)
                if path is not None and node not in path:
                    out[node] = (self.port_toward(node, nb), nb)
                    break
        return out

    @cached_property
    def broadcast_tree(self) -> frozenset[tuple[int, int]]:
        """(dpid, port) pairs of inter-switch ports on a loop-free spanning tree.

        Broadcast and multicast are flooded on this tree only, so looped topologies
        (fat-tree) do not melt. One tree per connected component, rooted at its lowest dpid.
        """
        ports: set[tuple[int, int]] = set()
        placed: set[int] = set()
        for root in self.graph:  # in dpid order: each component's lowest dpid comes first
            if root in placed:
                continue
            tree = self.tree_toward(root)
            placed.add(root)
            placed.update(tree)
            for node, (port, parent) in tree.items():
                ports.add((node, port))
                ports.add((parent, self.port_toward(parent, node)))
        return frozenset(ports)

    @cached_property
    def _hosts_by_ip(self) -> dict[str, Host]:
        return {ip: host for host in self.hosts.values() for ip in host.ips}

    def host_by_ip(self, ip: str) -> Host | None:
        return self._hosts_by_ip.get(ip)

    def host_named(self, mac: str | None, ip: str | None) -> Host | None:
        """The host a policy field pair names: by MAC if given, else by a single IP."""
        if mac:
            return self.hosts.get(mac)
        if ip and is_single_address(ip):
            return self.host_by_ip(ip)
        return None
