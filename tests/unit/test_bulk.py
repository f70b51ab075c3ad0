"""Bulk bodies read in slices (api/bulk.py): the same policies and the same 422s as one
whole validation, each slice heavy work (api/pacing.py): half the loop at most."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.loop import LoopTurns
from vtap.api.bulk import MAX_ERRORS, SLICE, _slices, read_specs
from vtap.api.pacing import HeavyWork


class Body:
    def __init__(self, data: bytes):
        self.data = data

    async def body(self) -> bytes:
        return self.data


def spec(i: int) -> dict:
    return {"name": f"p{i}", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.3", "ip_proto": "udp", "dst_port": 1 + i % 60000,
            "monitor_ip": "10.0.0.2"}


def read(data: bytes):
    async def main():
        return await read_specs(Body(data), HeavyWork())

    return asyncio.run(main())


def errors_of(data: bytes) -> list[dict]:
    with pytest.raises(RequestValidationError) as info:
        read(data)
    return info.value.errors()


def test_a_valid_array_gives_every_policy_in_order():
    specs = read(json.dumps([spec(i) for i in range(3 * SLICE + 7)], indent=1).encode())
    assert [s.name for s in specs] == [f"p{i}" for i in range(3 * SLICE + 7)]
    assert specs[5].dst_port == 6 and str(specs[5].monitor_ip) == "10.0.0.2"
    assert read(b" [ ] ") == []


def test_a_bad_policy_is_named_by_its_index_and_field_even_in_a_later_slice():
    body = [spec(i) for i in range(2 * SLICE)]
    body[SLICE + 3]["dst_port"] = 70000
    errors = errors_of(json.dumps(body).encode())
    assert [e["loc"] for e in errors] == [("body", SLICE + 3, "dst_port")]


def test_bytes_that_are_not_an_array_of_json_name_where():
    assert "array" in errors_of(b'{"name": "x"}')[0]["msg"]
    assert "character 10" in errors_of(b'[{"a": 1} {"b": 2}]')[0]["msg"]
    assert "invalid JSON" in errors_of(b"[1,]")[0]["msg"]
    assert "extra data" in errors_of(b"[] []")[0]["msg"]
    assert "invalid JSON" in errors_of(b"[")[0]["msg"]
    assert "UTF-8" in errors_of(b"[\xff]")[0]["msg"]
    assert all(e["loc"] == ("body",) for body in (b"", b"null", b'"x"') for e in errors_of(body))


def test_a_body_of_many_bad_policies_answers_with_the_first_ones_and_a_count():
    errors = errors_of(json.dumps([{"name": f"x{i}"} for i in range(400)]).encode())
    assert len(errors) == MAX_ERRORS + 1 and errors[-1]["msg"].startswith("and ") and errors[0]["loc"][:2] == ("body", 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                             lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                             max_leaves=8), max_size=40),
       st.sampled_from([None, 0, 2]), st.sampled_from([(",", ":"), (", ", ": ")]))
def test_elements_parse_as_json_does_whatever_the_layout(items, indent, separators):
    text = json.dumps(items, indent=indent, separators=separators)

    assert [item for items in _slices(text) for item in items] == json.loads(text)


def test_heavy_slices_leave_a_busy_loop_half_of_the_time():
    """Beside work that always wants the loop (turns of 0.5 ms each), the heavy slices
    leave it as long as they took."""
    body = json.dumps([spec(i) for i in range(20 * SLICE)]).encode()

    async def main() -> tuple[int, HeavyWork, float]:
        heavy, busy, done = HeavyWork(), [0.0], False

        async def neighbour() -> None:
            while not done:
                started = time.perf_counter()
                while time.perf_counter() - started < 0.0005:
                    pass
                busy[0] += time.perf_counter() - started
                await asyncio.sleep(0)

        task = asyncio.ensure_future(neighbour())
        await asyncio.sleep(0)
        async with LoopTurns() as turns:
            await read_specs(Body(body), heavy)
        done = True
        await task
        return turns.count, heavy, busy[0]

    turns, heavy, busy = asyncio.run(main())
    assert heavy.slices == 21 and turns >= 21  # 20 slices and the end found; the loop ran between each
    assert busy >= heavy.seconds * 0.95  # as long again left to the rest as the slices took


def test_heavy_slices_leave_three_quarters_of_the_interpreter_to_a_busy_thread():
    """While the controller's own work runs in a thread (a whole compile), an idle loop
    is no reason to go on: each slice is followed by a sleep three times as long."""
    body = json.dumps([spec(i) for i in range(20 * SLICE)]).encode()

    async def main() -> tuple[HeavyWork, float]:
        heavy = HeavyWork(lambda: True)
        t0 = time.perf_counter()
        await read_specs(Body(body), heavy)
        return heavy, time.perf_counter() - t0

    heavy, wall = asyncio.run(main())
    assert heavy.slices == 21 and wall >= 4 * heavy.seconds * 0.95


def test_heavy_slices_of_several_requests_run_one_at_a_time():
    async def main() -> list[tuple[str, str]]:
        heavy, events = HeavyWork(), []

        async def request(name: str) -> None:
            for _ in range(3):
                async with heavy.slice():
                    events.append((name, "in"))
                    await asyncio.sleep(0.001)  # a slice that yields inside still holds the turn
                    events.append((name, "out"))

        await asyncio.gather(request("a"), request("b"))
        return events

    events = asyncio.run(main())
    assert len(events) == 12 and all(events[i][0] == events[i + 1][0] and events[i][1] == "in" for i in range(0, 12, 2))
