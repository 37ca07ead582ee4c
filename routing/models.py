"""What the gateway serves and where it sends it, as edited in the Django admin."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from inference.errors import GatewayError
from inference.local.model import ModelSpec

if TYPE_CHECKING:
    from inference.local.backend import Defaults

from .crypto import DecryptionError, EncryptedSecretField, Secret
from .validators import (
    model_name_validator,
    validate_base_url,
    validate_extra_headers,
    validate_group,
    validate_pattern,
)

# The last 4 characters say which key it is; of a short key they would say too much.
MIN_KEY_FOR_SUFFIX = 16


class CredentialError(GatewayError):
    """A provider's key is unusable (cannot be decrypted): a configuration error."""

    status = 500
    kind = "api_error"
    code = "credential_error"


def price_field(direction: str, **options: Any) -> models.DecimalField[Any, Any]:
    """A price in USD per million tokens (what a request's cost is computed from)."""
    return models.DecimalField(
        max_digits=12,
        decimal_places=4,
        validators=[MinValueValidator(0)],
        verbose_name=f"{direction} price",
        help_text=f"USD per million {direction} tokens.",
        **options,  # the field keywords (null, blank, default)
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
    input_price = price_field("input", default=0)
    output_price = price_field("output", default=0)
    accepts_prefill = models.BooleanField(
        default=True,
        help_text="Continue a stream another backend broke off mid-answer (the chat "
        "template's continue-final-message mode).",
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
        # Imported here: inference.local.backend loads mlx-lm, which every
        # management command (import_config, createsuperuser...) would pay for.
        from inference.local.backend import Defaults

        return Defaults(
            max_tokens=self.default_max_tokens or settings.GATEWAY_DEFAULT_MAX_TOKENS,
            temperature=self.default_temperature,
            top_p=self.default_top_p,
        )


class Provider(models.Model):
    """A cloud backend: an OpenAI-compatible API or Anthropic's."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic"
        # Another machine's (or process's) local models: manage.py serve_models.
        MODEL_SERVER = "model-server", "Gateway model server"

    DEFAULT_URLS = {
        Kind.OPENAI: "https://api.openai.com/v1",
        Kind.ANTHROPIC: "https://api.anthropic.com",
    }

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    base_url = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_base_url],
        help_text="Empty: the official URL of the kind (OpenAI or Anthropic). Any host: "
        "https://api.example.com/v1, http://vllm:8000/v1 ...",
    )
    extra_headers = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_extra_headers],
        help_text='Sent with every request, e.g. {"OpenAI-Organization": "org-1"}. '
        "Not for secrets: those go in the API key.",
    )
    connect_timeout = models.FloatField(default=5.0, validators=[MinValueValidator(0.1)])
    first_byte_timeout = models.FloatField(
        default=60.0,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds to the response headers.",
    )
    first_token_timeout = models.FloatField(
        default=120.0,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds from the request to a stream's first content token; past it "
        "the next target is asked at once.",
    )
    stream_idle_timeout = models.FloatField(
        default=60.0,
        validators=[MinValueValidator(0.1)],
        help_text="Longest silence inside a stream.",
    )
    total_timeout = models.FloatField(
        default=600.0,
        validators=[MinValueValidator(1)],
        help_text="Budget for a request, all attempts together.",
    )
    max_retries = models.PositiveSmallIntegerField(
        default=2, validators=[MaxValueValidator(10)], help_text="Retries on the same provider."
    )
    retry_backoff = models.FloatField(default=0.5, validators=[MinValueValidator(0)])
    retry_after_cap = models.FloatField(
        default=20.0, validators=[MinValueValidator(0)], help_text="Longest Retry-After honoured."
    )
    breaker_fail_max = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1)],
        help_text="Failures in a row that open the breaker.",
    )
    breaker_reset_timeout = models.FloatField(
        default=30.0,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds before a half-open probe.",
    )
    accepts_prefill = models.BooleanField(
        null=True,
        blank=True,
        help_text="Takes a trailing assistant message and continues it, so it can finish "
        "a stream another backend broke off. Unknown: the kind's default (Anthropic yes, "
        "OpenAI-compatible no).",
    )
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_base_url(self) -> str:
        return (self.base_url or self.DEFAULT_URLS.get(self.Kind(self.kind), "")).rstrip("/")

    def clean(self) -> None:
        if self.kind == self.Kind.MODEL_SERVER and not self.base_url:
            raise ValidationError(
                {"base_url": "A model server has no default address: give its URL, "
                 "e.g. http://10.0.0.5:8100/v1."}
            )  # fmt: skip


class CloudCredential(models.Model):
    """A provider's API key, Fernet-encrypted at rest; never shown back."""

    provider = models.OneToOneField(Provider, on_delete=models.CASCADE, related_name="credential")
    api_key = EncryptedSecretField()
    key_suffix = models.CharField(max_length=4, blank=True, editable=False)
    source_env = models.CharField(
        max_length=200,
        blank=True,
        help_text="Environment variable the key was imported from (export_config writes "
        "this name, never the key).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "cloud credential"

    def __str__(self) -> str:
        return f"key for {self.provider_id and self.provider.name}"

    def __repr__(self) -> str:
        return f"<CloudCredential provider={self.provider_id} key=...{self.key_suffix}>"

    def set_key(self, plain: str, *, source_env: str = "") -> None:
        self.api_key = Secret(plain=plain)
        self.key_suffix = plain[-4:] if len(plain) >= MIN_KEY_FOR_SUFFIX else ""
        self.source_env = source_env

    def reveal(self) -> str:
        """The plain key, or an error naming the provider: never the ciphertext."""
        try:
            return self.api_key.reveal()
        except DecryptionError as exc:
            raise CredentialError(
                f"the API key of provider {self.provider.name!r} {exc}; "
                "set the key again or add the old key to GATEWAY_FERNET_KEYS"
            ) from None


class BackendMapping(models.Model):
    """Where requests for model names matching `pattern` go, in order."""

    pattern = models.CharField(
        max_length=200,
        unique=True,
        validators=[validate_pattern],
        help_text="fnmatch pattern on the requested model name, e.g. gpt-4o or claude-*.",
    )
    priority = models.IntegerField(
        default=0, help_text="Higher wins; among equal priorities the most specific pattern wins."
    )

    class Balance(models.TextChoices):
        LEAST_IN_FLIGHT = "least-in-flight", "least in flight"
        ROUND_ROBIN = "round-robin", "round robin"
        LATENCY = "latency", "lowest latency (time to first token)"

    balance = models.CharField(
        max_length=20,
        choices=Balance.choices,
        default=Balance.LEAST_IN_FLIGHT,
        help_text="How a group of equivalent targets in this chain picks one for a request.",
    )
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "pattern"]
        verbose_name = "backend mapping"

    def __str__(self) -> str:
        return f"{self.pattern} (priority {self.priority})"


class MappingTarget(models.Model):
    """One link of a mapping's chain: a local model, or a provider and upstream model."""

    mapping = models.ForeignKey(BackendMapping, on_delete=models.CASCADE, related_name="targets")
    position = models.PositiveSmallIntegerField(default=0, help_text="0 = primary, then fallbacks.")
    local_model = models.ForeignKey(LocalModel, null=True, blank=True, on_delete=models.PROTECT)
    provider = models.ForeignKey(Provider, null=True, blank=True, on_delete=models.PROTECT)
    upstream_model = models.CharField(
        max_length=200,
        blank=True,
        help_text="Model name sent upstream; empty = the requested name.",
    )
    # Optional for providers (empty: not priced, its requests cost 0); a local
    # target costs its local model's prices.
    input_price = price_field("input", null=True, blank=True)
    output_price = price_field("output", null=True, blank=True)
    group = models.CharField(
        max_length=40,
        blank=True,
        validators=[validate_group],
        help_text="Targets of this chain with the same group name share the load (the "
        "mapping's balance); the group stands at its first member's position.",
    )
    weight = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Share of its group's traffic, relative to the other members.",
    )

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(local_model__isnull=False, provider__isnull=True)
                    | models.Q(local_model__isnull=True, provider__isnull=False)
                ),
                name="target_is_local_xor_provider",
            )
        ]

    def __str__(self) -> str:
        if self.local_model_id:
            return f"local:{self.local_model}"
        return f"{self.provider}:{self.upstream_model or '<requested>'}"

    def endpoint(self) -> tuple[Literal["local", "provider"], str]:
        """What it points at: ("local", model name) or ("provider", provider name)."""
        if self.local_model is not None:
            return "local", self.local_model.name
        assert self.provider is not None, "target_is_local_xor_provider"
        return "provider", self.provider.name


class VersionStamp(models.Model):
    """One row whose version changes with every change to what it stands for.

    Each process caches what it reads and compares the stamp now and then:
    one tiny query per refresh period instead of a full read per request.
    """

    version = models.BigIntegerField(default=0)
    # Declared for the type checker (an abstract model has no manager of its
    # own in django-stubs); at run time each subclass gets this default one.
    objects = models.Manager()

    class Meta:
        abstract = True

    @classmethod
    def bump(cls) -> None:
        updated = cls.objects.filter(pk=1).update(version=models.F("version") + 1)
        if not updated:
            cls.objects.get_or_create(pk=1, defaults={"version": 1})

    @classmethod
    def current(cls) -> int:
        return cls.objects.filter(pk=1).values_list("version", flat=True).first() or 0


class RoutingState(VersionStamp):
    """Changes with any routing change, for other processes."""


# The runtime switch lives in its own module; imported here so Django
# registers it with this app.
from .models_runtime import RoutingSwitch as RoutingSwitch  # noqa: E402
