"""vtap: a virtual TAP for software-defined networks."""

__version__ = "0.1.0"
