"""Pure compilation: network view and TAP policies -> per-switch rule sets.

No sockets, files or clock here: the same inputs give the same rules, byte for byte.
"""
