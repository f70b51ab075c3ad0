"""The request guard's rate limit for callers without a token."""

from __future__ import annotations

from vtap.api.guard import ADDRESSES_TRACKED, AddressRate


def test_an_address_gets_its_burst_then_the_steady_rate_and_others_are_not_affected():
    rate = AddressRate(rate=10.0, burst=20.0)
    assert all(rate.allow("10.0.0.1", 0.0) for _ in range(20))
    assert not rate.allow("10.0.0.1", 0.0)
    assert rate.allow("10.0.0.2", 0.0)  # another address has its own bucket
    assert rate.allow("10.0.0.1", 0.1) and not rate.allow("10.0.0.1", 0.1)  # 10/s: one more after 0.1 s
    while rate.allow("10.0.0.1", 1.0):
        pass
    assert 9 <= sum(rate.allow("10.0.0.1", 1.0 + (i + 1) / 100) for i in range(100)) <= 10  # 10 in the next second


def test_the_addresses_kept_are_bounded():
    rate = AddressRate(rate=1.0, burst=1.0)
    for i in range(ADDRESSES_TRACKED + 500):
        rate.allow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 0.0)
    assert len(rate.buckets) == ADDRESSES_TRACKED
