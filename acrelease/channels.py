"""Release channels: the one name every part of acrelease agrees on.

A release is on one channel (``releases.toml`` ``channel``, default :data:`STABLE`); a device asks
for a channel with ``?channel=`` in its update URL. ``stable`` devices get stable releases only; a
device on any other channel gets that channel's releases and the stable ones (docs/protocol.md H.1).
"""

STABLE = "stable"
