"""The request log (one row per API request, written in batches off the request
path) and the daily usage rollup the writer keeps beside it (`services`).

Both moved here from the routing app (`migrations/0001_initial.py` says how);
the log's key column points at `gateway.keys`' ApiKey.
"""

from __future__ import annotations

from django.db import models

from gateway.keys.models import ApiKey

ANONYMOUS_KEY = 0  # UsageDay.key_id of requests made without a key (NULL would not be unique)


class RequestLog(models.Model):
    class Protocol(models.TextChoices):
        OPENAI = "openai", "OpenAI"
        ANTHROPIC = "anthropic", "Anthropic"

    created_at = models.DateTimeField(db_index=True, help_text="When the request arrived.")
    api_key = models.ForeignKey(
        ApiKey,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="requests",
        verbose_name="API key",
    )
    protocol = models.CharField(max_length=16, choices=Protocol.choices)
    # Indexed: the admin's filters list these columns' distinct values.
    endpoint = models.CharField(max_length=64, db_index=True)
    requested_model = models.CharField(max_length=200, blank=True)
    backend = models.CharField(max_length=200, blank=True, help_text="Who answered.")
    served_model = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    fallbacks = models.PositiveSmallIntegerField(default=0)
    attempt_trail = models.CharField(
        max_length=1000, blank=True, help_text="Each try and its outcome, as in X-Gateway-Attempts."
    )
    stream = models.BooleanField(default=False)
    status = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(
        max_length=500, blank=True, help_text="What the caller was told (cut to 500 characters)."
    )
    mapping = models.CharField(
        max_length=200,
        blank=True,
        help_text="The pattern of the mapping that routed the name (empty: served by the "
        "local model of that name, or no route), as routing stood when the row was written.",
    )
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(
        default=0, help_text="Of the input tokens, those read from a prompt cache."
    )
    cost = models.DecimalField(
        max_digits=14, decimal_places=8, default=0,
        help_text="USD, from the serving target's prices at the time.",
    )  # fmt: skip
    latency_ms = models.FloatField(verbose_name="latency (ms)")
    ttft_ms = models.FloatField(null=True, blank=True, verbose_name="time to first token (ms)")

    class Meta:
        # The routing app's table, kept when the model moved (migrations/0001 says why).
        db_table = "routing_requestlog"
        ordering = ["-created_at", "-id"]
        verbose_name = "request log entry"
        verbose_name_plural = "request log entries"
        # A filtered list is ordered by time: each filter's index ends with it
        # (and still serves the filter's list of distinct values).
        indexes = [
            models.Index(fields=["api_key", "created_at"], name="requestlog_key_time"),
            models.Index(fields=["status", "created_at"], name="requestlog_status_time"),
            models.Index(fields=["backend", "created_at"], name="requestlog_backend_time"),
            models.Index(fields=["mapping", "created_at"], name="requestlog_mapping_time"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.endpoint} {self.status}"


class UsageDay(models.Model):
    """Requests, tokens and spend per UTC day, key and requested model.

    Kept by the request log writer in the same transaction as the rows it adds,
    so the usage page reads a few hundred rows instead of grouping a month of
    the log.
    """

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
        db_table = "routing_usageday"  # kept from the routing app, as RequestLog's
        verbose_name = "usage per day"
        constraints = [
            models.UniqueConstraint(fields=["day", "key_id", "model"], name="usage_day_key_model")
        ]
        indexes = [models.Index(fields=["key_id", "day"], name="usage_key_day")]

    def __str__(self) -> str:
        return f"{self.day} key {self.key_id} {self.model}: {self.requests} requests"
