"""What a store refuses, the same for SQLite and etcd, so the API maps each to one reply."""


class NameTaken(Exception):
    """Another policy already has this name."""


class NotFound(Exception):
    """No policy (or token) with this id."""


class StoreUnavailable(Exception):
    """The store cannot take a write now (etcd unreachable, or this instance fenced off):
    nothing was changed. Reads go on from the last state this instance saw."""
