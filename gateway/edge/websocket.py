"""The WebSocket branch's door: unknown paths and foreign Hosts are turned away.

channels' URLRouter raises for a path it has no route for, which daphne turns
into a 500 and a traceback per attempt; here such a handshake is refused (403)
and counted, as is one whose Host is not in ALLOWED_HOSTS.
"""

from __future__ import annotations

from typing import Any

from . import checks, refusals


class KnownPathsOnly:
    def __init__(self, app: Any, paths: tuple[str, ...]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if path in self.paths and checks.host_refusal(scope) is None:
            return await self.app(scope, receive, send)
        message = await receive()
        if message["type"] == "websocket.connect":
            # Closing before accepting: the server answers the handshake with 403.
            await send({"type": "websocket.close", "code": 4404})
        refusals.count("websocket_refused", 403)
