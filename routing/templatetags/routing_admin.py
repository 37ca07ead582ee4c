"""Template tags of the routing admin: the routing mode the gateway runs in."""

from django import template

from routing import selectors

register = template.Library()


@register.simple_tag
def routing_mode() -> bool:
    # The snapshot's: the admin's switch or ENABLE_CLOUD_ROUTING, as requests see it.
    return selectors.snapshot().table.cloud_routing
