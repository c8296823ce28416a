"""Building firmware with the release version compiled in, and collecting IDE exports.

``platformio`` drives the real ``pio`` command, ``arduino`` finds Arduino IDE / arduino-cli
exports, ``release_build`` turns either into one call of :func:`acrelease.release.add_release`.
"""
