"""The daily usage rollup: requests, tokens and spend per UTC day, key and model.

Maintained by the request log writer in the same transaction as the rows it
adds (`services_logs`), so the usage page reads a few hundred rows instead of
grouping a month of the log. Import it from `routing.models`.
"""

from __future__ import annotations

from django.db import models

ANONYMOUS_KEY = 0  # key_id of requests made without a key (NULL would not be unique)


class UsageDay(models.Model):
    day = models.DateField(help_text="UTC day.")
    # Not a foreign key: a deleted key's usage stays, under its old id.
    key_id = models.PositiveIntegerField(default=ANONYMOUS_KEY)
    model = models.CharField(max_length=200, help_text="The requested model name.")
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=0, help_text="USD.")

    class Meta:
        verbose_name = "usage per day"
        constraints = [
            models.UniqueConstraint(fields=["day", "key_id", "model"], name="usage_day_key_model")
        ]
        indexes = [models.Index(fields=["key_id", "day"], name="usage_key_day")]

    def __str__(self) -> str:
        return f"{self.day} key {self.key_id} {self.model}: {self.requests} requests"
