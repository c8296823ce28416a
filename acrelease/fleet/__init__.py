"""The fleet registry: what devices say about themselves, and the operator's per-device intent.

Two kinds of state, kept apart (docs/architecture.md, "State: what the operator says, what devices
say"): observations written in batches by the servers (:mod:`.recorder`), and intent (rollouts,
pins, assignments, holds) changed by the CLI and read by every server as one immutable
:class:`~acrelease.fleet.model.FleetView`. Both live behind one interface (:mod:`.store`).
"""
