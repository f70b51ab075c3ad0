"""The whole desired state: base forwarding plus TAP rules, per switch."""

from __future__ import annotations

from vtap.compile.forwarding import compile_forwarding, packet_in_meter
from vtap.compile.taps import TapCompilation, compile_taps
from vtap.model.policy import Tap
from vtap.model.rules import SwitchRules
from vtap.model.view import NetworkView


def compile_network(view: NetworkView, taps: list[Tap], packet_in_rate: int = 0) -> tuple[dict[int, SwitchRules], TapCompilation]:
    forwarding = compile_forwarding(view, packet_in_rate)
    meter = packet_in_meter(packet_in_rate)
    meters = frozenset([meter]) if meter else frozenset()
    comp = compile_taps(view, taps)
    desired = {}
    for dpid, flows in forwarding.items():
        tap_rules = comp.rules.get(dpid, SwitchRules())
        desired[dpid] = SwitchRules(flows | tap_rules.flows, tap_rules.groups, meters)
    return desired, comp
