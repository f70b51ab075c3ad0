"""Incremental compile: a compile that reuses its memo gives exactly what a fresh one gives.

Random sequences of policy adds, updates and deletes (with and without copy budgets),
capture jobs, and changes of the
network itself (a link down, a host moving), on a fat-tree: after every step the
compile with the memo kept from the steps before (and, as in the controller, the same
view object while only policies change) equals a whole compile on a fresh view."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.fabric import view_from_topo
from vtap.compile.taps import TapMemo, compile_taps
from vtap.lab.topos import parse_topo
from vtap.model.capture import CaptureTarget
from vtap.model.policy import MatchSpec, Tap, TapSpec

TOPO = parse_topo("fattree,4")
BASE = view_from_topo(TOPO)
UPLINKS = [(0x030001, p) for p in sorted(BASE.link_ports[0x030001])]
DOWN = {0: set(), 1: set(UPLINKS[:1]), 2: set(UPLINKS)}  # nothing; one up-link; the edge switch cut off


def _ip(i: int) -> str:
    return f"10.0.0.{i}"


BUDGETS = [{}, {"snaplen": 128}, {"sample": 4, "rate_limit_pps": 500}, {"pool": True, "sample": 2}]

specs = st.builds(
    lambda src, dst, port, mon, transport, direction, proto, wide, budget: TapSpec(
        name="x", src_ip=("10.0.0.0/28" if wide else _ip(src)), dst_ip=_ip(dst), ip_proto=proto,
        dst_port=port if proto in ("tcp", "udp") else None, direction=direction,
        src_mac=None if wide else f"00:00:00:00:00:{src:02x}", dst_mac=f"00:00:00:00:00:{dst:02x}",
        **({"transport": transport, "monitor_ip": _ip(mon)} if not budget else
           {"monitor_pool": [_ip(mon), _ip(mon % 16 + 1)]} if budget.get("pool") else {"monitor_ip": _ip(mon)}),
        **{k: v for k, v in budget.items() if k != "pool"}),
    st.integers(1, 16), st.integers(1, 16), st.sampled_from([80, 443]), st.integers(1, 16),
    st.sampled_from(["vlan", "rewrite"]), st.sampled_from(["forward", "both"]), st.sampled_from(["tcp", "udp", None]),
    st.booleans(), st.sampled_from(BUDGETS),
)
steps = st.lists(st.one_of(
    st.tuples(st.just("set"), st.integers(1, 12), specs),
    st.tuples(st.just("delete"), st.integers(1, 12), st.none()),
    st.tuples(st.just("capture"), st.integers(1, 3), st.integers(1, 16)),
    st.tuples(st.just("uncapture"), st.integers(1, 3), st.none()),
    st.tuples(st.just("link"), st.sampled_from(sorted(DOWN)), st.none()),
    st.tuples(st.just("move"), st.integers(1, 16), st.none()),
), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_any_sequence_of_changes_compiles_to_what_a_whole_compile_gives(sequence):
    taps: dict[int, Tap] = {}
    captures: dict[int, CaptureTarget] = {}
    down: set = set()
    moved: int | None = None
    memo = TapMemo()
    view = view_from_topo(TOPO)
    for op, a, b in sequence:
        network_changed = op in ("link", "move")
        if op == "set":
            taps[a] = Tap(id=a, spec=b.model_copy(update={"name": f"t{a}"}))
        elif op == "delete":
            taps.pop(a, None)
        elif op == "capture":
            captures[a] = CaptureTarget(a, MatchSpec(src_ip=_ip(b)), 64 + a)
        elif op == "uncapture":
            captures.pop(a, None)
        elif op == "link":
            down = DOWN[a]
        else:
            moved = a
        if network_changed:  # else the same view object, as the controller keeps it for policy changes
            view = _view(down, moved)
        policies, jobs = sorted(taps.values(), key=lambda t: t.id), sorted(captures.values(), key=lambda c: c.id)
        incremental = compile_taps(view, policies, jobs, memo=memo)
        whole = compile_taps(_view(down, moved), policies, jobs)
        assert incremental == whole


def _view(down, moved):
    view = view_from_topo(TOPO, down=down)
    if moved is not None:  # a host moves to the other port of its edge switch's neighbour host
        host = view.hosts[f"00:00:00:00:00:{moved:02x}"]
        other = next(h for h in view.hosts.values() if h.dpid == host.dpid and h.mac != host.mac)
        view.hosts[host.mac] = type(host)(**{**host.__dict__, "port": other.port, "dpid": other.dpid})
    return view


plain_specs = st.builds(
    lambda src, dst, port, mon, direction, proto, wide: TapSpec(
        name="x", src_ip=("10.0.0.0/29" if wide else _ip(src)), dst_ip=_ip(dst), ip_proto=proto,
        dst_port=port if proto in ("tcp", "udp") else None, direction=direction, monitor_ip=_ip(mon)),
    st.integers(1, 16), st.integers(1, 16), st.sampled_from([80, 443]), st.sampled_from([5, 9, 13]),
    st.sampled_from(["forward", "both"]), st.sampled_from(["tcp", "udp", None]), st.booleans(),
)
plain_steps = st.lists(st.one_of(
    st.tuples(st.just("set"), st.integers(1, 30), plain_specs),
    st.tuples(st.just("delete"), st.integers(1, 30), st.none()),
    st.tuples(st.just("link"), st.sampled_from(sorted(DOWN)), st.none()),
), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 30), plain_specs), min_size=3, max_size=30), plain_steps)
def test_plain_changes_made_in_place_equal_a_whole_compile(start, sequence):
    """Policies copied over VLAN without a budget (overlapping, both directions, wide
    sources) are changed in place: the regions a change overlaps are redone, the rest
    kept. After every step that equals a whole compile."""
    taps = {i: Tap(id=i, spec=s.model_copy(update={"name": f"t{i}"})) for i, s in start}
    memo = TapMemo()
    down: set = set()
    view = view_from_topo(TOPO)
    compile_taps(view, sorted(taps.values(), key=lambda t: t.id), memo=memo)
    for op, a, b in sequence:
        if op == "set":
            taps[a] = Tap(id=a, spec=b.model_copy(update={"name": f"t{a}"}))
        elif op == "delete":
            taps.pop(a, None)
        else:
            down = DOWN[a]
            view = _view(down, None)
        policies = sorted(taps.values(), key=lambda t: t.id)
        assert compile_taps(view, policies, memo=memo) == compile_taps(_view(down, None), policies)


def test_a_change_among_many_plain_policies_is_made_in_place():
    """Adding, changing and deleting one of 300 policies takes the in-place path (the
    property test above would also pass with whole compiles only), and a change that
    is not plain (a copy budget), or a new view, does not."""
    from vtap.bench.controlplane import policies
    taps = {i + 1: Tap(id=i + 1, spec=TapSpec(**body)) for i, body in enumerate(policies(0, 300, 20000))}
    memo, view = TapMemo(), view_from_topo(TOPO)
    compile_taps(view, list(taps.values()), memo=memo)
    extra = policies(300, 1, 20000)[0]
    steps = [("add", 301, TapSpec(**extra)), ("update", 7, TapSpec(**{**extra, "name": "p6", "dst_port": 1})),
             ("delete", 12, None), ("add", 302, TapSpec(**{**extra, "name": "wide", "src_ip": "10.0.0.0/28"}))]
    for n, (op, ident, spec) in enumerate(steps, start=1):
        if spec is None:
            del taps[ident]
        else:
            taps[ident] = Tap(id=ident, spec=spec)
        assert compile_taps(view, list(taps.values()), memo=memo) == compile_taps(view_from_topo(TOPO), list(taps.values()))
        assert memo.in_place == n, op
    taps[303] = Tap(id=303, spec=TapSpec(**{**extra, "name": "budgeted", "snaplen": 128}))
    compile_taps(view, list(taps.values()), memo=memo)
    compile_taps(view_from_topo(TOPO), list(taps.values()), memo=memo)
    assert memo.in_place == len(steps)
