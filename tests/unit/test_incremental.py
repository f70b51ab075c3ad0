"""Incremental compile: a compile that reuses its memo gives exactly what a fresh one gives.

Random sequences of policy adds, updates and deletes of every kind (plain, copy budgets
— snaplen, sampling, rate limits —, monitor pools, each tunnel transport with and
without a tunnel key, rewrite, disabled), capture jobs, and changes of the network
itself (a link down, a host moving, tunnel ports), on a fat-tree: after every step the
compile with the memo kept from the steps before (and, as in the controller, the same
view object while only policies change) equals a whole compile on a fresh view. Where
only policies change, the in-place path (compile/taps/inplace.py) must have been taken
whenever it can be: the monitor set stays."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.fabric import view_from_topo
from tests.unit.test_tunnels import with_tunnel_ports
from vtap.bench.compile import KINDS, as_kind
from vtap.bench.controlplane import policies
from vtap.compile.budget import shape_bucket
from vtap.compile.pipeline import GROUP_ID_MASK
from vtap.compile.taps import TapCompilation, TapMemo, compile_taps
from vtap.compile.taps.buckets import _buckets_id
from vtap.lab.topos import parse_topo
from vtap.model.capture import CaptureTarget
from vtap.model.policy import MatchSpec, Tap, TapSpec
from vtap.model.state import PolicyState

TOPO = parse_topo("fattree,4")
BASE = view_from_topo(TOPO)
UPLINKS = [(0x030001, p) for p in sorted(BASE.link_ports[0x030001])]
DOWN = {0: set(), 1: set(UPLINKS[:1]), 2: set(UPLINKS)}  # nothing; one up-link; the edge switch cut off
PORTS = {0: ("gre", "erspan1", "erspan2", "vxlan", "geneve"), 1: ("gre",)}  # tunnel ports on every switch


def _ip(i: int) -> str:
    return f"10.0.0.{i}"


# Every kind of policy, by how its copies travel ("pool": its monitor and the next host).
KIND_FIELDS = {
    "plain": {}, "rewrite": {"transport": "rewrite"}, "snaplen": {"snaplen": 128},
    "sampled": {"sample": 4, "rate_limit_pps": 500}, "rate": {"rate_limit_pps": 1000},
    "pool": {"pool": True, "sample": 2}, "cut pool": {"pool": True, "snaplen": 256},
    "gre": {"transport": "gre"}, "vxlan": {"transport": "vxlan", "tunnel_key": 7},
    "erspan": {"transport": "erspan"}, "erspan2": {"transport": "erspan", "erspan_version": 2, "tunnel_key": 3},
    "geneve": {"transport": "geneve", "tunnel_key": 0xABCDE}, "disabled": {"enabled": False},
}
FAMILY = {"snaplen": "budgeted", "sampled": "budgeted", "rate": "budgeted", "cut pool": "pool", "vxlan": "tunnelled",
          "gre": "tunnelled", "erspan": "tunnelled", "erspan2": "tunnelled", "geneve": "tunnelled"}


def _spec(src: int, dst: int, port: int, mon: int, direction: str, proto: str | None, wide: bool, kind: str) -> TapSpec:
    """A policy of `kind` from `src` to `dst` (`wide`: from a /28), copied to host `mon`."""
    fields = KIND_FIELDS[kind]
    monitor = {"monitor_pool": [_ip(mon), _ip(mon % 16 + 1)]} if fields.get("pool") else {"monitor_ip": _ip(mon)}
    return TapSpec(name="x", src_ip=("10.0.0.0/28" if wide else _ip(src)), dst_ip=_ip(dst), ip_proto=proto,
                   dst_port=port if proto in ("tcp", "udp") else None, direction=direction,
                   src_mac=None if wide else f"00:00:00:00:00:{src:02x}", dst_mac=f"00:00:00:00:00:{dst:02x}",
                   **monitor, **{k: v for k, v in fields.items() if k != "pool"})




def kinded_specs(monitors=st.integers(1, 16)):
    """(kind, policy of that kind)."""
    return st.builds(lambda kind, *args: (kind, _spec(*args, kind)), st.sampled_from(sorted(KIND_FIELDS)),
                     st.integers(1, 16), st.integers(1, 16), st.sampled_from([80, 443]), monitors,
                     st.sampled_from(["forward", "both"]), st.sampled_from(["tcp", "udp", None]), st.booleans())


specs = kinded_specs().map(lambda pair: pair[1])
steps = st.lists(st.one_of(
    st.tuples(st.just("set"), st.integers(1, 12), specs),
    st.tuples(st.just("delete"), st.integers(1, 12), st.none()),
    st.tuples(st.just("capture"), st.integers(1, 3), st.integers(1, 16)),
    st.tuples(st.just("uncapture"), st.integers(1, 3), st.none()),
    st.tuples(st.just("link"), st.sampled_from(sorted(DOWN)), st.none()),
    st.tuples(st.just("move"), st.integers(1, 16), st.none()),
    st.tuples(st.just("ports"), st.sampled_from(sorted(PORTS)), st.none()),
), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_any_sequence_of_changes_compiles_to_what_a_whole_compile_gives(sequence):
    taps: dict[int, Tap] = {}
    captures: dict[int, CaptureTarget] = {}
    network = {"down": set(), "moved": None, "ports": 0}
    memo = TapMemo()
    view = _view(**network)
    for op, a, b in sequence:
        if op == "set":
            taps[a] = Tap(id=a, spec=b.model_copy(update={"name": f"t{a}"}))
        elif op == "delete":
            taps.pop(a, None)
        elif op == "capture":
            captures[a] = CaptureTarget(a, MatchSpec(src_ip=_ip(b)), 64 + a)
        elif op == "uncapture":
            captures.pop(a, None)
        else:
            key, value = {"link": ("down", DOWN.get(a)), "move": ("moved", a), "ports": ("ports", a)}[op]
            network[key] = value
            view = _view(**network)  # else the same view object, as the controller keeps it for policy changes
        policies_, jobs = sorted(taps.values(), key=lambda t: t.id), sorted(captures.values(), key=lambda c: c.id)
        incremental = compile_taps(view, policies_, jobs, memo=memo)
        assert incremental == compile_taps(_view(**network), policies_, jobs)


def _view(down=frozenset(), moved=None, ports=0):
    view = with_tunnel_ports(view_from_topo(TOPO, down=down), PORTS[ports])
    if moved is not None:  # a host moves to the other port of its edge switch's neighbour host
        host = view.hosts[f"00:00:00:00:00:{moved:02x}"]
        other = next(h for h in view.hosts.values() if h.dpid == host.dpid and h.mac != host.mac)
        view.hosts[host.mac] = type(host)(**{**host.__dict__, "port": other.port, "dpid": other.dpid})
    return view


def _monitors(comp: TapCompilation) -> tuple[set[str], set[str]]:
    """The monitors with a copy VLAN id, and those with a delivery group."""
    return set(comp.monitor_tags), {m for macs in comp.monitors.values() for m in macs}


# A few monitors (pools: 5 and 6, or 9 and 10), so that most changes keep the monitor set.
few_monitors = kinded_specs(st.sampled_from([5, 9]))
policy_steps = st.lists(st.one_of(
    st.tuples(st.just("set"), st.integers(1, 30), few_monitors),
    st.tuples(st.just("delete"), st.integers(1, 30), st.none()),
), min_size=1, max_size=30)


def test_every_kind_of_policy_change_is_made_in_place_and_equals_a_whole_compile():
    """Policies of every kind, overlapping (both directions, wide sources), changed one
    at a time on the same view: after every step the compile with the memo equals a
    whole compile, and it was made in place exactly when it can be (the monitor set
    stays: copy VLAN ids and delivery groups are per monitor). Across the examples,
    changes of every kind (plain, budgeted, pool, tunnelled, rewrite, disabled) were
    made in place, so the property cannot hold by whole compiles alone."""
    in_place: Counter[str] = Counter()

    # Derandomized: the examples are the same at every run, so that whether they reach
    # every kind in place does not depend on the draw (at random, one run in a few
    # missed `plain`, one kind of eleven).
    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(st.integers(1, 30), few_monitors), min_size=3, max_size=30), policy_steps)
    def run(start, sequence):
        taps = {i: Tap(id=i, spec=s.model_copy(update={"name": f"t{i}"})) for i, (_, s) in start}
        kind = {i: k for i, (k, _) in start}
        memo, view = TapMemo(), _view()
        compile_taps(view, sorted(taps.values(), key=lambda t: t.id), memo=memo)
        before = compile_taps(_view(), sorted(taps.values(), key=lambda t: t.id))  # (the memo's is changed in place)
        for op, a, b in sequence:
            kinds = {kind[a]} if a in taps else set()
            if op == "set":
                taps[a] = Tap(id=a, spec=b[1].model_copy(update={"name": f"t{a}"}))
                kind[a] = b[0]
                kinds.add(b[0])
            else:
                taps.pop(a, None)
            policies_ = sorted(taps.values(), key=lambda t: t.id)
            n = memo.in_place
            incremental = compile_taps(view, policies_, memo=memo)
            whole = compile_taps(_view(), policies_)
            assert incremental == whole
            expected = _monitors(whole) == _monitors(before)
            assert memo.in_place - n == expected, (op, a, kinds)
            if expected:
                in_place.update(FAMILY.get(k, k) for k in kinds)
            before = whole

    run()
    assert set(in_place) == {FAMILY.get(k, k) for k in KIND_FIELDS}, in_place


def test_one_change_among_many_policies_of_each_kind_is_made_in_place():
    """One of 300 policies of each kind (the compile bench's) added, updated, disabled,
    enabled and deleted: in place every time, and what a whole compile gives."""
    for kind in KINDS:
        taps = {k + 1: Tap(id=k + 1, spec=TapSpec(**as_kind(kind, body, k))) for k, body in enumerate(policies(0, 301, 20000))}
        extra = taps.pop(301)
        memo, view = TapMemo(), _view()
        compile_taps(view, list(taps.values()), memo=memo)
        moved = extra.spec.model_copy(update={"dst_port": 1})
        steps = [("add", extra), ("update", Tap(id=301, spec=moved)),
                 ("disable", Tap(id=301, spec=moved.model_copy(update={"enabled": False}))), ("enable", extra), ("delete", None)]
        for n, (op, tap) in enumerate(steps, start=1):
            if tap is None:
                del taps[301]
            else:
                taps[301] = tap
            comp = compile_taps(view, list(taps.values()), memo=memo)
            assert comp == compile_taps(_view(), list(taps.values())), (kind, op)
            assert memo.in_place == n, (kind, op)
            assert op in ("disable", "delete") or comp.states[301].state == PolicyState.COMPILED, (kind, op)


def test_a_switch_changed_in_place_is_built_anew_when_a_whole_compile_meets_its_old_key():
    """The in-place path changes a tap switch's part itself, not a copy (a copy was
    O(the switch's regions) per change), while the memo holds it under the key of what
    it was. A whole compile with that memo, whose inputs give that key again (the
    change undone, then a view change or a burst), must build the switch anew, not take
    the changed part for the old one."""
    for kind in KINDS:
        taps = {k + 1: Tap(id=k + 1, spec=TapSpec(**as_kind(kind, body, k))) for k, body in enumerate(policies(0, 60, 20000))}
        memo, view = TapMemo(), _view()
        compile_taps(view, list(taps.values()), memo=memo)
        first = taps[7]
        taps[7] = Tap(id=7, spec=first.spec.model_copy(update={"dst_port": 1}))
        compile_taps(view, list(taps.values()), memo=memo)
        assert memo.in_place == 1, kind
        taps[7] = first
        memo.last = None  # no in-place path: the whole compile, with the memo (the same view token)
        assert compile_taps(view, list(taps.values()), memo=memo) == compile_taps(_view(), list(taps.values())), kind
        assert memo.in_place == 1, kind


def test_changes_that_only_a_whole_compile_can_make_are_made_whole():
    """Budget ids that meet (the younger policy's state is an error), a monitor that comes
    (a new copy VLAN id) and a new view take the whole compile and give what it gives; a
    change elsewhere after the budget clash is still made in place."""
    bodies = policies(0, 200, 20000)
    taps = {k + 1: Tap(id=k + 1, spec=TapSpec(**as_kind("budgeted", {**body, "monitor_ip": _ip(5)}, k)))
            for k, body in enumerate(bodies)}
    memo, view = TapMemo(), _view()
    compile_taps(view, list(taps.values()), memo=memo)
    first, far = taps[1].spec, next(t for t in taps.values() if t.spec.src_ip == _ip(9))  # h1's and h9's edge switches differ
    # Send group ids come from the policy id's low 17 bits: 131,073's meet policy 1's at its tap switch.
    changes = [
        ("budget clash", Tap(id=131_073, spec=first.model_copy(update={"dst_port": 9, "snaplen": 256})), view, False),
        ("elsewhere", Tap(id=far.id, spec=far.spec.model_copy(update={"dst_port": 9})), view, True),
        ("new monitor", Tap(id=2, spec=taps[2].spec.model_copy(update={"monitor_ip": _ip(9)})), view, False),
        ("new view", Tap(id=3, spec=taps[3].spec.model_copy(update={"dst_port": 1})), _view(), False),
    ]
    for what, tap, v, made_in_place in changes:
        taps[tap.id] = tap
        n = memo.in_place
        comp = compile_taps(v, list(taps.values()), memo=memo)
        assert comp == compile_taps(_view(), list(taps.values())), what
        assert memo.in_place - n == made_in_place, what
        assert comp.states[131_073].state == PolicyState.ERROR


def test_tap_group_ids_whose_hashes_meet_are_allotted_in_place_as_a_whole_compile_does():
    """Two tap groups of one switch whose buckets hash to one id: the whole compile gives
    the id to the group of the first region and the next id to the other, so a change
    in place may move an untouched group's id (its rules with it)."""
    def pair(a: int, b: int, dst: int) -> list[Tap]:  # one match, two monitors: a region whose buckets lead to both
        body = {"name": "x", "src_ip": _ip(1), "dst_ip": _ip(dst), "ip_proto": "udp", "dst_port": 53, "snaplen": 128}
        return [Tap(id=i, spec=TapSpec(**{**body, "name": f"t{i}", "monitor_ip": _ip(m)})) for i, m in ((a, 5), (b, 9))]

    assert _buckets_id((shape_bucket(4), shape_bucket(61))) & GROUP_ID_MASK == (
        _buckets_id((shape_bucket(248), shape_bucket(249))) & GROUP_ID_MASK)
    taps = {t.id: t for t in pair(4, 61, 2) + pair(248, 249, 3)}
    memo, view = TapMemo(), _view()
    compile_taps(view, list(taps.values()), memo=memo)
    moved = taps[249].spec.model_copy(update={"dst_ip": _ip(4)})
    steps = [(61, None), (61, taps[61]), (249, Tap(id=249, spec=moved)), (4, None), (4, taps[4])]
    for n, (ident, tap) in enumerate(steps, start=1):
        if tap is None:
            del taps[ident]
        else:
            taps[ident] = tap
        assert compile_taps(view, list(taps.values()), memo=memo) == compile_taps(_view(), list(taps.values())), n
        assert memo.in_place == n
