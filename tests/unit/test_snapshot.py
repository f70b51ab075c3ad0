"""A restart reuses the last stop's compile only when it is the compile a fresh one would
make: the same inputs (view, policies, packet-in rate, capture jobs), the same compiler,
a file signed with the store's key (control/snapshot.py). And the memo keeps its parts
for a new view object with the same value (compile/taps/state.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vtap.bench.compile import population, topo_view
from vtap.compile.network import compile_network
from vtap.compile.taps import TapMemo
from vtap.control import snapshot
from vtap.control.core import CompileInputs
from vtap.lab.topos import parse_topo
from vtap.model.capture import CaptureTarget
from vtap.model.policy import MatchSpec, Tap

KEY = b"k" * 32


def _inputs(count: int = 300, kind: str = "plain") -> CompileInputs:
    view = topo_view(parse_topo("fattree,4"))
    return CompileInputs(view, population(kind, count), 100, ())


def _compile(inputs: CompileInputs, memo: TapMemo | None = None, changed: set[int] | None = None):
    return compile_network(inputs.view, inputs.taps, inputs.packet_in_rate, list(inputs.captures), memo, changed)


@pytest.mark.parametrize("kind", ["plain", "budgeted", "pool", "tunnelled", "rewrite"])
def test_a_snapshot_of_equal_inputs_is_the_compile_a_fresh_one_makes(tmp_path, kind):
    before = _inputs(kind=kind)
    assert snapshot.save(tmp_path, KEY, before, _compile(before))
    loaded = snapshot.load(tmp_path, KEY)
    assert not (tmp_path / snapshot.FILE).exists()  # read once
    after = _inputs(kind=kind)  # a restart's: other objects, equal values
    assert after.view is not before.view and after.differs(before) is None
    reused = snapshot.reusable(loaded, after)
    desired, comp = _compile(after)
    assert reused is not None
    assert reused[0] == desired
    assert reused[1].states == comp.states and reused[1].cookie_owners == comp.cookie_owners
    assert reused[1].monitor_tags == comp.monitor_tags and reused[1].deliveries == comp.deliveries


def test_a_snapshot_is_not_reused_when_any_input_differs(tmp_path):
    before = _inputs()
    view = before.view
    host = next(iter(view.hosts.values()))
    tap = before.taps[7]
    others = {
        "view.hosts": replace(before, view=replace(view, hosts={**view.hosts, host.mac: replace(host, port=host.port + 40)})),
        "view.links": replace(before, view=replace(view, links=frozenset(sorted(view.links)[1:]))),
        "view.unknown_ports": replace(before, view=replace(view, unknown_ports=frozenset({(host.dpid, 99)}))),
        "taps": replace(before, taps={**before.taps, 7: Tap(id=7, spec=tap.spec.model_copy(update={"dst_port": 9}))}),
        "packet_in_rate": replace(before, packet_in_rate=200),
        "captures": replace(before, captures=(CaptureTarget(1, MatchSpec(src_ip="10.0.0.1"), 96),)),
    }
    for why, inputs in others.items():
        assert snapshot.save(tmp_path, KEY, before, _compile(before))
        assert inputs.differs(before).split(" (")[0] == why
        assert snapshot.reusable(snapshot.load(tmp_path, KEY), inputs) is None, why


def test_a_device_reconnected_with_the_same_ports_is_the_same_input():
    before = _inputs(20)
    dpid, device = next(iter(before.view.devices.items()))
    again = replace(before, view=replace(before.view, devices={**before.view.devices, dpid: replace(device, connected_since=99.0)}))
    assert again.differs(before) is None


def test_a_snapshot_not_signed_with_the_key_or_of_another_compiler_is_ignored(tmp_path, monkeypatch):
    inputs = _inputs(20)
    snapshot.save(tmp_path, KEY, inputs, _compile(inputs))
    assert snapshot.load(tmp_path, b"x" * 32) is None
    assert not (tmp_path / snapshot.FILE).exists()

    snapshot.save(tmp_path, KEY, inputs, _compile(inputs))
    data = bytearray((tmp_path / snapshot.FILE).read_bytes())
    data[-5] ^= 1
    (tmp_path / snapshot.FILE).write_bytes(bytes(data))
    assert snapshot.load(tmp_path, KEY) is None

    snapshot.save(tmp_path, KEY, inputs, _compile(inputs))
    monkeypatch.setattr(snapshot, "code_digest", lambda: "another")
    assert snapshot.load(tmp_path, KEY) is None
    assert snapshot.load(tmp_path, KEY) is None  # no file at all


def test_too_many_policies_are_not_written_at_a_stop(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "MAX_POLICIES", 10)
    inputs = _inputs(20)
    assert not snapshot.save(tmp_path, KEY, inputs, _compile(inputs))
    assert not (tmp_path / snapshot.FILE).exists()


def test_a_new_view_object_of_the_same_value_keeps_the_memo_and_the_in_place_path():
    inputs = _inputs(200)
    memo = TapMemo()
    _compile(inputs, memo)
    equal = _inputs(200)  # another view object, the same value, as a controller makes after each event
    tap = equal.taps[5]
    equal.taps[5] = Tap(id=5, spec=tap.spec.model_copy(update={"dst_port": tap.spec.dst_port + 1}))
    before = memo.in_place
    desired, comp = _compile(equal, memo, {5})
    assert memo.in_place == before + 1
    fresh_desired, fresh = _compile(equal)
    assert desired == fresh_desired and comp.states == fresh.states
