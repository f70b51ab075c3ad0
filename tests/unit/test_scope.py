"""An operator's scope (SERVICE.md principle 5): every identifier a policy gives lies in
`sources`, whatever the peer; only a policy with no identifier at all is for admins."""

from __future__ import annotations

import pytest

from vtap.model.access import Scope, scope_violations
from vtap.model.policy import MatchSpec, TapSpec

SCOPE = Scope(sources=("10.0.0.0/30", "00:00:00:00:00:09"), monitors=("10.0.0.2",))


@pytest.mark.parametrize("match", [
    {"src_ip": "10.0.0.1"},  # all that source sends, to anyone
    {"dst_ip": "10.0.0.3"},  # all that destination receives, from anyone
    {"src_mac": "00:00:00:00:00:09", "direction": "both"},
    {"src_ip": "10.0.0.1", "dst_ip": "10.0.0.0/31"},
])
def test_identifiers_inside_the_sources_are_in_scope_whatever_the_peer(match):
    assert scope_violations(TapSpec(name="t", monitor_ip="10.0.0.2", **match), SCOPE) == []


@pytest.mark.parametrize("match, field", [
    ({"src_ip": "10.0.0.5"}, "src_ip"),
    ({"src_ip": "10.0.0.1", "dst_ip": "10.0.0.8"}, "dst_ip"),
    ({"src_ip": "10.0.0.0/24"}, "src_ip"),  # wider than the scope
    ({"dst_mac": "00:00:00:00:00:08"}, "dst_mac"),
])
def test_an_identifier_outside_the_sources_is_named(match, field):
    bad = scope_violations(TapSpec(name="t", monitor_ip="10.0.0.2", **match), SCOPE)
    assert [f for f, _ in bad] == [field] and "outside your scope" in bad[0][1]


def test_no_identifier_at_all_is_for_admins():
    class AnyMatch(MatchSpec):  # a capture job's match may leave every end open
        def needs_identifiers(self) -> bool:
            return False

    bad = scope_violations(AnyMatch(ip_proto="udp"), SCOPE)
    assert bad == [("src_ip", "no identifier given: the policy taps any traffic, which only an admin may")]


def test_the_monitor_must_be_in_scope_too():
    bad = scope_violations(TapSpec(name="t", src_ip="10.0.0.1", monitor_ip="10.0.0.3"), SCOPE)
    assert bad == [("monitor_ip", "10.0.0.3 is outside your scope's monitors")]
