"""`vtap bench`: the seed's evaluation on this machine (`dataplane`), the control plane at
scale (`controlplane`), and bring-up and flow-mod intake (`foundation`)."""
