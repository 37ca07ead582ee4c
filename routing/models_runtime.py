"""Settings an operator changes at runtime, in the admin: the cloud-routing switch.

One row (pk 1). Saving it bumps the routing stamp (signals), so every gateway
process sees the change within GATEWAY_ROUTING_REFRESH_SECONDS; the admin's
history of the row is its audit log. Import it from `routing.models`.
"""

from __future__ import annotations

from django.db import models


class RoutingSwitch(models.Model):
    cloud_routing = models.BooleanField(
        null=True,
        blank=True,
        choices=[(None, "as ENABLE_CLOUD_ROUTING says"), (True, "on"), (False, "off")],
        help_text="On: requests follow the backend mappings. Off: each name is served by "
        "the local model of that name. Until set here, ENABLE_CLOUD_ROUTING decides.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "cloud routing"
        verbose_name_plural = "cloud routing"

    def __str__(self) -> str:
        return "cloud routing"

    @classmethod
    def current(cls) -> bool | None:
        """The admin's choice (None: not made, ENABLE_CLOUD_ROUTING decides)."""
        return cls.objects.filter(pk=1).values_list("cloud_routing", flat=True).first()
