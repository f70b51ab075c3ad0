"""OpenFlow 1.3 southbound: the asyncio channel and the rule <-> message translation.

Knows bytes and messages, not policies. os-ken is used as a codec only.
"""
