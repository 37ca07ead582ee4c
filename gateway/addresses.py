"""Addresses `manage.py serve` prints and allows: a URL a client can reach when the
gateway listens on every interface, and the Host header Django must accept for it."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

from django.conf import settings
from django.http.request import validate_host

EVERY_INTERFACE = {"0.0.0.0", "::", ""}
# Connecting a UDP socket sends nothing: it only asks the kernel which local
# address would be used for a route out (TEST-NET-1, never a real host).
_PROBE = ("192.0.2.1", 9)


def reachable_host(host: str) -> str:
    """`host`, or for 0.0.0.0 / :: this machine's address on its default route
    (127.0.0.1 when it has none): the host a printed URL should carry."""
    if host not in EVERY_INTERFACE:
        return host
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(_PROBE)
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def url_host(host: str) -> str:
    """A host as it is written in a URL (IPv6 addresses in brackets)."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def allow_host(host: str) -> bool:
    """Let Django accept `host` in this process and the server it starts (through
    GATEWAY_ALLOWED_HOSTS); False when it already did."""
    allowed = list(settings.ALLOWED_HOSTS)
    if validate_host(url_host(host), allowed) or validate_host(host, allowed):
        return False
    allowed.append(url_host(host))
    settings.ALLOWED_HOSTS = allowed
    os.environ["GATEWAY_ALLOWED_HOSTS"] = ",".join(allowed)
    return True


def python_command() -> str:
    """This interpreter as a user would type it here: `.venv/bin/python` in the
    checkout (the README's set-up does not activate the virtual environment)."""
    relative = os.path.relpath(sys.executable)
    return sys.executable if relative.startswith("..") else relative
