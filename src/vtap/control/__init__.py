"""The running controller: discovery, host tracking, the reconciler, event wiring.

The only layer that knows time; every event here just updates the view and marks
switches dirty, and the reconciler brings dirty switches to their desired rules.
"""
