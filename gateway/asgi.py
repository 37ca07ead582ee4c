"""ASGI entry point for servers that import an application and give it no
start-up hook (bare `daphne gateway.asgi:application`: daphne has no ASGI
lifespan): the application of gateway.application, and the process's start-up
(`gateway.startup.start`) called here, once, by name.

`manage.py serve` and `python -m gateway.edge.server` serve
gateway.application:application and call the start-up themselves; given this
module instead they serve the same, started once.
"""

from __future__ import annotations

from gateway.application import application
from gateway.startup import start

__all__ = ["application"]

start()
