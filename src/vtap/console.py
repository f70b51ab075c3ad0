"""Text output shared by the command line and the demo."""

from __future__ import annotations


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Left-aligned columns under a header and a rule, as `ovs-vsctl list` users expect."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*headers), line.format(*("-" * w for w in widths))]
    out += [line.format(*(str(x) for x in r)) for r in rows]
    return "\n".join(out)
