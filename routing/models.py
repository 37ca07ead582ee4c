"""What the gateway serves and where it sends it, as edited in the Django admin."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from inference.local.backend import Defaults
from inference.local.model import ModelSpec

model_name_validator = RegexValidator(
    r"^[^\s]+$", "Model names cannot contain whitespace.", code="invalid_model_name"
)


class LocalModel(models.Model):
    """A model folder (MLX / Hugging Face layout) served by the local MLX engine."""

    name = models.CharField(
        max_length=200,
        unique=True,
        validators=[model_name_validator],
        help_text="The name clients put in the `model` field.",
    )
    path = models.CharField(
        max_length=1024,
        help_text="Folder with config.json, *.safetensors and tokenizer files. "
        "A relative path is taken under GATEWAY_MODELS_DIR.",
    )
    enabled = models.BooleanField(default=True)
    preload = models.BooleanField(
        default=False, help_text="Load when the gateway starts instead of on first use."
    )
    context_length = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: max_position_embeddings from config.json."
    )
    default_max_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Used when a request gives no max_tokens."
    )
    default_temperature = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(2.0)],
        help_text="Used only when a request gives no temperature (0 = greedy).",
    )
    default_top_p = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "local model"

    def __str__(self) -> str:
        return self.name

    @property
    def resolved_path(self) -> Path:
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else Path(settings.GATEWAY_MODELS_DIR) / path

    def spec(self) -> ModelSpec:
        return ModelSpec(
            name=self.name, path=str(self.resolved_path), context_length=self.context_length
        )

    def defaults(self) -> Defaults:
        return Defaults(
            max_tokens=self.default_max_tokens or settings.GATEWAY_DEFAULT_MAX_TOKENS,
            temperature=self.default_temperature,
            top_p=self.default_top_p,
        )
