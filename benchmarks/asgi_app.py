"""The acrelease ASGI app for third-party servers (granian, uvicorn), for the benchmark record.

``ACRELEASE_CATALOG`` names the catalog. ``granian --interface asgi --factory
benchmarks.asgi_app:factory`` or ``uvicorn --factory benchmarks.asgi_app:factory``.
"""

from __future__ import annotations

import os
from pathlib import Path

from acrelease.server.app import UpdateApp, create_app
from acrelease.server.settings import ServerSettings


def factory() -> UpdateApp:
    return create_app(ServerSettings(catalog=Path(os.environ["ACRELEASE_CATALOG"])))
