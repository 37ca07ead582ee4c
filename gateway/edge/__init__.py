"""The gateway's edge: what is refused before a request reaches routing.

`checks` holds the per-request checks made on the ASGI scope (Host, Content-Type),
`refusals` counts and logs every refusal at the edge, `guard` is the Twisted
connection guard daphne runs behind (body size, header and body deadlines,
connection caps), `server` starts daphne with it, and `drain` is the graceful
shutdown on SIGTERM.
"""
