"""TAP policy validation and JSON round trips (property-based)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from vtap.model import policy
from vtap.model.policy import Tap, TapSpec, shared_fields_set

macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
v4 = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(1, 254)).map(lambda t: ".".join(map(str, t)))
v4net = st.tuples(st.integers(0, 255), st.integers(8, 24)).map(lambda t: f"{t[0]}.0.0.0/8" if t[1] == 8 else f"10.{t[0]}.0.0/16")

specs = st.builds(
    dict,
    name=st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True),
    src_mac=st.one_of(st.none(), macs),
    src_ip=st.one_of(st.none(), v4, v4net),
    dst_ip=st.one_of(st.none(), v4),
    monitor_ip=v4,
    ip_proto=st.one_of(st.none(), st.sampled_from(["tcp", "udp", 6, 17, "icmp"])),
    vlan_id=st.one_of(st.none(), st.integers(0, 4095)),
    direction=st.sampled_from(["forward", "reverse", "both"]),
    transport=st.sampled_from(["vlan", "rewrite"]),
).filter(lambda d: d["src_mac"] or d["src_ip"] or d["dst_ip"])


@given(specs)
def test_valid_specs_round_trip_through_json(d):
    spec = TapSpec(**d)
    again = TapSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert TapSpec(**spec.model_dump()) == spec


@given(st.integers().filter(lambda p: not 0 <= p <= 65535))
def test_ports_out_of_range_rejected(port):
    with pytest.raises(ValidationError) as err:
        TapSpec(name="x", dst_ip="10.0.0.1", monitor_ip="10.0.0.2", ip_proto="tcp", dst_port=port)
    assert err.value.errors()[0]["loc"] == ("dst_port",)


@given(st.integers().filter(lambda v: not 0 <= v <= 4095))
def test_vlan_out_of_range_rejected(vlan):
    with pytest.raises(ValidationError) as err:
        TapSpec(name="x", dst_ip="10.0.0.1", monitor_ip="10.0.0.2", vlan_id=vlan)
    assert err.value.errors()[0]["loc"] == ("vlan_id",)


@given(st.binary(min_size=1, max_size=7).filter(lambda b: len(b) != 6).map(lambda b: ":".join(f"{x:02x}" for x in b)))
def test_macs_of_the_wrong_length_rejected(mac):
    with pytest.raises(ValidationError) as err:
        TapSpec(name="x", src_mac=mac, monitor_ip="10.0.0.2")
    assert err.value.errors()[0]["loc"] == ("src_mac",)


@pytest.mark.parametrize("fields, loc, words", [
    ({"dst_port": 80}, "dst_port", "ip_proto"),
    ({"ip_proto": "udp", "src_port": 53, "dst_ip": "2001:db8::1", "src_ip": "10.0.0.1"}, "dst_ip", "same IP version"),
    ({"src_ip": "10.0.0.1/24"}, "src_ip", "host bits"),
    ({"monitor_ip": "10.0.0.0/24"}, "monitor_ip", "single IP"),
    ({"ip_proto": 300}, "ip_proto", "0-255"),
    ({"name": "has space"}, "name", "letters"),
    ({"extra": 1}, "extra", "Extra"),
])
def test_each_rule_names_its_field(fields, loc, words):
    base = {"name": "x", "dst_ip": "10.0.0.1", "monitor_ip": "10.0.0.2"}
    with pytest.raises(ValidationError) as err:
        TapSpec(**(base | fields))
    e = next(e for e in err.value.errors() if e["loc"] == (loc,))
    assert words.lower() in e["msg"].lower()


def test_whole_policy_rules():
    with pytest.raises(ValidationError, match="at least one identifier"):
        TapSpec(name="x", monitor_ip="10.0.0.2")
    with pytest.raises(ValidationError, match="a monitor is needed"):
        TapSpec(name="x", src_ip="10.0.0.1")


def test_star_means_any_and_names_resolve():
    spec = TapSpec(name="x", src_ip="*", dst_ip="10.0.0.2", src_mac="*", monitor_mac="AA-BB-CC-DD-EE-FF", ip_proto="TCP", dst_port="*")
    assert spec.src_ip is None and spec.src_mac is None and spec.dst_port is None
    assert spec.monitor_mac == "aa:bb:cc:dd:ee:ff" and spec.ip_proto == 6


def test_a_declared_set_is_matched_to_the_stored_one_by_name():
    from vtap.model.policy import Tap, plan_changes

    def spec(name, **kw):
        return TapSpec(name=name, src_ip="10.0.0.1", monitor_ip="10.0.0.2", **kw)

    stored = [Tap(id=3, spec=spec("gone")), Tap(id=1, spec=spec("keep")), Tap(id=2, spec=spec("edit"))]
    by_name = {t.spec.name: t for t in stored}
    declared = [spec("keep"), spec("edit", dst_ip="10.0.0.3"), spec("new")]
    plan = plan_changes(by_name, declared, prune=False)
    assert [t.spec.name for t in plan.added] == ["new"] and plan.removed == []
    assert [(b.id, a.id, a.spec.dst_ip) for b, a in plan.changed] == [(2, 2, "10.0.0.3")]
    assert [t.id for t in plan.unchanged] == [1]
    assert [t.id for t in plan_changes(by_name, declared, prune=True).removed] == [3]
    same = [t.spec for t in stored]
    assert plan_changes(by_name, same, prune=True) == plan_changes(by_name, same, prune=False)
    with pytest.raises(ValueError, match="declared twice"):
        plan_changes(by_name, [spec("a"), spec("a")], prune=False)
    # Without prune, only the declared names are read: a mapping that holds just those plans alike.
    assert plan_changes({"edit": by_name["edit"], "keep": by_name["keep"]}, declared, prune=False) == plan


def test_the_name_index_follows_adds_renames_and_removals():
    from vtap.model.policy import Tap, index_name

    def tap(i, name):
        return Tap(id=i, spec=TapSpec(name=name, src_ip="10.0.0.1", monitor_ip="10.0.0.2"))

    by_name: dict = {}
    a, b = tap(1, "a"), tap(2, "b")
    index_name(by_name, None, a)
    index_name(by_name, None, b)
    renamed = tap(1, "a2")
    index_name(by_name, a, renamed)
    assert by_name == {"a2": renamed, "b": b}
    # A name taken over by another policy (renamed away, then taken) is not dropped by the old holder's removal.
    taken = tap(3, "a")
    index_name(by_name, None, taken)
    index_name(by_name, a, None)
    assert by_name == {"a2": renamed, "b": b, "a": taken}
    index_name(by_name, b, None)
    index_name(by_name, None, None)
    assert by_name == {"a2": renamed, "a": taken}


def test_a_stored_spec_keeps_only_its_own_fields_as_given_and_the_same_values():
    """Stored with every field written, a spec parsed back equals the original, and
    pydantic's set of the fields given holds only those off their default (the whole
    set, one per policy, was 2.2 KiB of its 3.8)."""
    spec = TapSpec(name="p", src_ip="10.0.0.1", dst_port=80, ip_proto="tcp", monitor_ip="10.0.0.9", sample=1)
    back = TapSpec.model_validate_json(spec.model_dump_json())
    assert back == spec
    assert back.model_fields_set == {"name", "src_ip", "dst_port", "ip_proto", "monitor_ip"}
    # A value off its default is still validated, and named when wrong.
    with pytest.raises(ValidationError, match="sample"):
        TapSpec.model_validate_json(spec.model_dump_json().replace('"sample":1', '"sample":0'))


class Unfrozen(BaseModel):
    x: int


def test_policies_given_the_same_fields_share_one_set_of_them():
    """pydantic keeps with each model the set of fields given (728 bytes of a stored
    policy's ~2.2 KiB): policies given the same fields share one, which no copy or
    refused assignment changes."""

    a = TapSpec(name="a", src_ip="10.0.0.1", monitor_mac="00:00:00:00:00:01")
    b = TapSpec.model_validate_json('{"name": "b", "src_ip": "10.0.0.2", "monitor_mac": "00:00:00:00:00:02"}')
    assert a.model_fields_set is b.model_fields_set == {"name", "src_ip", "monitor_mac"}
    assert Tap(id=1, spec=a).model_fields_set is Tap(id=2, spec=b).model_fields_set
    other = TapSpec(name="c", dst_ip="10.0.0.3", monitor_mac="00:00:00:00:00:01")
    assert other.model_fields_set is not a.model_fields_set
    moved = a.model_copy(update={"vlan_id": 5})
    assert moved.model_fields_set == {"name", "src_ip", "monitor_mac", "vlan_id"}
    with pytest.raises(ValidationError):
        b.vlan_id = 7  # frozen
    assert a.model_fields_set == b.model_fields_set == {"name", "src_ip", "monitor_mac"}
    with pytest.raises(AssertionError):  # sound for frozen models only
        shared_fields_set(Unfrozen(x=1))


def test_beyond_the_cap_a_policy_keeps_its_own_set(monkeypatch):
    """The sets shared are capped: specs crafted with ever other fields given cannot grow
    the table without end; beyond the cap each keeps its own, with the same fields."""

    monkeypatch.setattr(policy, "_fields_sets", {})
    monkeypatch.setattr(policy, "FIELDS_SETS_MAX", 1)
    a = TapSpec(name="a", src_ip="10.0.0.1", monitor_mac="00:00:00:00:00:01")
    b = TapSpec(name="b", src_ip="10.0.0.1", monitor_mac="00:00:00:00:00:01", vlan_id=3)
    c = TapSpec(name="c", src_ip="10.0.0.1", monitor_mac="00:00:00:00:00:01", vlan_id=4)
    assert len(policy._fields_sets) == 1
    assert b.model_fields_set == c.model_fields_set == {"name", "src_ip", "monitor_mac", "vlan_id"}
    assert b.model_fields_set is not c.model_fields_set and a.model_fields_set is policy._fields_sets[frozenset(a.model_fields_set)]


@given(specs, st.integers(0, 2 ** 63 - 1))
def test_a_tap_made_without_validation_is_the_validated_one(d, ident):
    """`Tap.of` skips validating what is valid already; the Tap it makes must be the one
    `Tap(...)` makes, for equality, hashing, dumps and the shared set of fields."""
    spec = TapSpec(**d)
    fast, validated = Tap.of(ident, spec), Tap(id=ident, spec=spec)
    assert fast == validated and hash(fast) == hash(validated) and repr(fast) == repr(validated)
    assert fast.model_dump() == validated.model_dump() and fast.model_dump_json() == validated.model_dump_json()
    assert fast.model_fields_set is validated.model_fields_set
    assert fast.model_copy(update={"id": 5}) == Tap(id=5, spec=spec)


def test_a_tap_made_without_validation_refuses_what_is_not_an_id_and_a_spec():
    spec = TapSpec(name="a", src_ip="10.0.0.1", monitor_mac="00:00:00:00:00:01")
    for ident, what in (("1", spec), (True, spec), (1.0, spec), (1, spec.model_dump())):
        with pytest.raises(TypeError, match="Tap.of takes an int and a TapSpec"):
            Tap.of(ident, what)
