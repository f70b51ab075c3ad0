"""Finding policies by what an operator remembers of them: a name, an address, a monitor.

`GET /api/v1/taps?q=` and the UI's filter box: with 100,000 policies an operator types
part of a name ("web-"), an address ("10.0.3.") or a monitor and expects the few that
match. Every word of the query must occur, case-insensitively, in one of the policy's
name, source and destination MAC and IP, monitor MAC and IP, or monitor pool.
"""

from __future__ import annotations

from vtap.model.policy import TapSpec


def words(query: str) -> list[str]:
    """The query's words, lower-cased (an empty query matches every policy)."""
    return query.lower().split()


def matches(spec: TapSpec, query_words: list[str]) -> bool:
    """Whether every word occurs in one of the fields an operator searches by."""
    if not query_words:
        return True
    fields = (spec.name, spec.src_mac, spec.src_ip, spec.dst_mac, spec.dst_ip, spec.monitor_mac, spec.monitor_ip,
              *(spec.monitor_pool or ()))
    haystack = "\n".join(f.lower() for f in fields if f)
    return all(w in haystack for w in query_words)
