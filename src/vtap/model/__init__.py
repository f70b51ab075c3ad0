"""Values of the domain: the network view and OpenFlow rule specs. No I/O, no clock."""
