"""The few ASGI type aliases shared by the app and the HTTP/1.x front end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ZERO_COPY = "acrelease.zero_copy"
"""Scope extension set by ``acrelease.server.http1``: body chunks may be memoryviews."""
