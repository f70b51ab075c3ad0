"""The lab: a private Open vSwitch instance and Mininet topologies pointed at the controller."""
