"""The request log: one row per API request, written in batches off the request path.

Import it from `routing.models`, which registers it with the app.
"""

from __future__ import annotations

from django.db import models

from .models_keys import ApiKey


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
