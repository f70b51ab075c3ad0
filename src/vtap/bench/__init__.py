"""`vtap bench`: the seed's evaluation on this machine, and the control plane at scale."""
