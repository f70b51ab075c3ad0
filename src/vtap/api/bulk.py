"""Bulk bodies read in slices, one at a time.

A bulk request (`PUT /api/v1/taps`, `POST /api/v1/taps:batch`) may carry up to 32 MiB:
some 250,000 policies. FastAPI would parse and validate such a list in one call on the
event loop that also answers the switches (2.7 s for 25 MiB, measured), and four such
requests at once would hold four parsed sets in memory. Here the array is parsed one
element at a time and validated a slice at a time, each slice heavy work
(`api/pacing.py`: at most half of the loop for all heavy requests together), and only
one slice of parsed JSON is held; the bulk routes take their bodies one request at a
time (a lock of theirs).

Errors are FastAPI's own 422, each naming `["body", index, field]`, so a client sees the
same answer either way.
"""

from __future__ import annotations

import gc
import json
import re

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from vtap.api.pacing import HeavyWork
from vtap.model.policy import TapSpec

SLICE = 256  # policies parsed or validated between two turns of the loop (~2 ms)
MAX_ERRORS = 50  # a body of 250,000 bad policies answers with the first ones

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_SPECS = TypeAdapter(list[TapSpec])

# The request body as OpenAPI describes it (the handler reads it itself), and its 422.
BAD_BODY = {"description": "the body is not a JSON array of valid policies: `detail` names each error's "
                           "`loc` (`[\"body\", index, field]`)"}
SPECS_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "array", "items": {"$ref": "#/components/schemas/TapSpec"}}}}}}


async def read_specs(request: Request, heavy: HeavyWork) -> list[TapSpec]:
    """The body's policies, validated whole: one bad element is a 422 naming its index
    and field, and nothing is returned. Parsed and validated a slice at a time, each
    slice heavy work (`api/pacing.py`)."""
    body = await request.body()
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise _invalid(f"not UTF-8 at byte {exc.start}", "json_invalid") from None
    specs: list[TapSpec] = []
    errors: list[dict] = []
    parts, start = _slices(text), 0
    try:
        while True:
            async with heavy.slice():
                items = next(parts, None)
                if items is None:
                    break
                try:
                    valid = _SPECS.validate_python(items)
                    if not errors:  # a body already refused keeps nothing more
                        specs.extend(valid)
                except ValidationError as exc:
                    errors.extend({**e, "loc": ("body", start + e["loc"][0], *e["loc"][1:])} for e in exc.errors())
                start += len(items)
                # What a slice made is acyclic (freed by reference counting, not the
                # collector); frozen, it does not make each full collection longer: unfrozen,
                # those walks over a growing set stalled the loop up to 110 ms at 200,000.
                gc.freeze()
        if errors:
            shown = errors[:MAX_ERRORS]
            if len(errors) > MAX_ERRORS:
                shown.append({"loc": ("body",), "msg": f"and {len(errors) - MAX_ERRORS} more errors", "type": "too_many_errors"})
            raise RequestValidationError(shown)
    except BaseException:
        await _release(specs, heavy)
        raise
    return specs


async def _release(specs: list[TapSpec], heavy: HeavyWork) -> None:
    """Free a refused body's policies a few slices at a time: 200,000 of them freed at
    once (when the list goes with the error) held the loop 200-300 ms, measured."""
    while specs:
        async with heavy.slice():
            del specs[-4 * SLICE:]


def _slices(text: str):
    """The elements of a JSON array, parsed one by one and handed on `SLICE` at a time
    (only one slice of parsed elements is held); a 422 naming the character where the
    text stops being one."""
    pos = _WS.match(text).end()
    if text[pos:pos + 1] != "[":
        raise _invalid("a JSON array of policies is expected", "list_type")
    pos = _WS.match(text, pos + 1).end()
    items: list = []
    if text[pos:pos + 1] == "]":
        pos += 1
    else:
        while True:
            try:
                item, pos = _DECODER.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise _invalid(f"invalid JSON at character {exc.pos}: {exc.msg}", "json_invalid") from None
            items.append(item)
            at = _WS.match(text, pos).end()
            sep, pos = text[at:at + 1], _WS.match(text, at + 1).end()
            if sep == "]":
                break
            if sep != ",":
                raise _invalid(f"invalid JSON at character {at}: ',' or ']' expected", "json_invalid")
            if len(items) == SLICE:
                yield items
                items = []
    if _WS.match(text, pos).end() != len(text):
        raise _invalid(f"invalid JSON at character {pos}: extra data after the array", "json_invalid")
    if items:
        yield items


def _invalid(msg: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body",), "msg": msg, "type": kind}])
