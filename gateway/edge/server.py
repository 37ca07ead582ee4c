"""`python -m gateway.edge.server [daphne's options] gateway.application:application`:
daphne, with the edge guard around its HTTP factory and a graceful drain on SIGTERM.

It takes every option daphne's own command line takes (it is daphne's command
line, `daphne.cli.CommandLineInterface`, with its documented `server_class`
swapped). `manage.py serve` and the test suite start the gateway this way. The
process's start-up (`gateway.startup.start`) runs in `Server.run`, daphne's
public entry, before it listens. A bare `daphne gateway.asgi:application` still
serves the same application, with neither the guard nor the drain: put the
nginx configuration of the README in front of it.

daphne builds its HTTP factory inside `Server.run()` and listens with it at
once; the one place to put a wrapping factory around it is the assignment of
`Server.http_factory`, which `GuardedServer` turns into a property. That name
is daphne's, not a documented hook: tests/test_framework_hooks.py names it and
fails if a daphne release stops going through it (docs/design.md, Framework
hooks, says why it is kept).
"""

from __future__ import annotations

from typing import Any

import daphne.server  # installs the asyncio reactor before anything imports one
from daphne.cli import CommandLineInterface


class GuardedServer(daphne.server.Server):
    def run(self) -> None:
        # Imported here: it needs Django, set up when daphne imported the app.
        from ..startup import start

        start()
        super().run()

    @property
    def http_factory(self) -> Any:
        return self._guard

    @http_factory.setter
    def http_factory(self, factory: object) -> None:
        # Imported here: they need Django, set up when daphne imported the app.
        from . import drain
        from .guard import Guard, Limits

        self._guard = Guard(factory, Limits.from_settings())
        drain.install(self._guard)


class GuardedCommandLine(CommandLineInterface):
    server_class = GuardedServer


if __name__ == "__main__":
    GuardedCommandLine.entrypoint()
