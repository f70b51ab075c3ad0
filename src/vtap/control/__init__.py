"""The running controller: discovery, host tracking, the reconciler, event wiring.

`ControlCore` (core.py) and the modules it uses decide, as pure functions of events
and the time they are given; `Controller` (controller.py) is the shell that owns the
sockets, timers and the clock (and the compile thread) and hands them the time. Every
event just updates the view and marks switches dirty; each switch's reconciler brings
it to its desired rules. The API and the store know the wall clock too (tokens'
expiry, audit records), never the decisions.
"""
