"""Durable state: SQLite under --state-dir by default, or etcd v3 for a cluster (--store etcd://);
both keep one interface, `vtap.store.base.PolicyStore`."""
