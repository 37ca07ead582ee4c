from django import template
from django.conf import settings

register = template.Library()


@register.simple_tag
def routing_mode() -> bool:
    return bool(settings.ENABLE_CLOUD_ROUTING)
