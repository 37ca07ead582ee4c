"""How a gateway process is started: the edge server's command line (daphne behind
the edge guard, with the graceful drain: gateway.edge.server), for `serve`,
`serve_models` and the workers `serve --workers N` supervises."""

from __future__ import annotations

import sys

# Built without start-up work: gateway.edge.server starts the process itself.
APPLICATION = "gateway.application:application"


def edge_command(host: str, port: int, *, fd: int | None = None) -> list[str]:
    """The command that serves the gateway on host:port, or on an inherited
    listening socket `fd` (several workers accepting on one address)."""
    where = ["--fd", str(fd)] if fd is not None else ["-b", host, "-p", str(port)]
    return [sys.executable, "-m", "gateway.edge.server", *where, APPLICATION]
