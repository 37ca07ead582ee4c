"""Django settings, read from the environment with safe local defaults.

Every knob an operator may turn is an environment variable; nothing secret is
hard-coded. Local runs get a generated SECRET_KEY persisted under the data dir.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DATA_DIR = Path(os.environ.get("GATEWAY_DATA_DIR", BASE_DIR / "data")).resolve()


def _private(path: Path, mode: int) -> None:
    """Owner-only: the data dir holds the secret and Fernet keys and the SQLite
    file with admin sessions. Tightened if it was created looser earlier."""
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(mode)
    except (FileNotFoundError, PermissionError):  # not ours to change: leave it
        pass


DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
_private(DATA_DIR, 0o700)


def _persisted_secret(filename: str, factory: Callable[[], str]) -> str:
    """Create a secret once and keep it, so restarts do not log everyone out."""
    path = DATA_DIR / filename
    if path.exists():
        return path.read_text().strip()
    value = factory()
    # O_EXCL: two processes starting together must not both write a key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


def _new_fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _persisted_secret(
    "secret_key", lambda: secrets.token_urlsafe(50)
)
# Provider API keys are encrypted with these (newest first; older ones still
# decrypt, so keys can be rotated). Local runs get one generated key, kept in
# the data dir; deployments set GATEWAY_FERNET_KEYS.
GATEWAY_FERNET_KEYS = env_list("GATEWAY_FERNET_KEYS", []) or [
    _persisted_secret("fernet_key", _new_fernet_key)
]
DEBUG = env_bool("GATEWAY_DEBUG", False)
ALLOWED_HOSTS = env_list("GATEWAY_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("GATEWAY_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "routing.apps.RoutingConfig",
    "gateway.keys.apps.KeysConfig",
    "gateway.usage.apps.UsageConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "gateway.middleware.ApiMethodNotAllowed",
]

# The API paths (/v1, /health, /metrics) run through gateway.handlers.ApiApplication
# with only these: async middleware, no thread hops.
GATEWAY_API_MIDDLEWARE = ["gateway.middleware.ApiMethodNotAllowed"]

ROOT_URLCONF = "gateway.urls"
ASGI_APPLICATION = "gateway.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{DATA_DIR / 'gateway.sqlite3'}",
        conn_max_age=env_int("GATEWAY_DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Created here owner-only: SQLite gives its -wal and -shm files the same mode.
    _sqlite = Path(DATABASES["default"]["NAME"])
    if _sqlite.parent.is_dir():
        os.close(os.open(_sqlite, os.O_WRONLY | os.O_CREAT, 0o600))
        _private(_sqlite, 0o600)
    # WAL lets the request log writer and readers work side by side.
    DATABASES["default"].setdefault("OPTIONS", {})["init_command"] = (
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    DATABASES["default"]["OPTIONS"]["timeout"] = 20

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"

# Bodies are JSON; the ASGI guard rejects anything larger with a 413 before
# Django buffers it, and Django's own check is aligned with it.
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 32 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY_MAX_BODY_BYTES
# The edge guard in front of daphne (gateway.edge.guard): a request's head must
# arrive within GATEWAY_HEADER_TIMEOUT seconds of its first byte and be at most
# GATEWAY_MAX_HEADER_BYTES (431 past it), its body within GATEWAY_BODY_TIMEOUT
# (408 past either); connections per process and per client address are capped
# (503 past either; the process cap also stays below the open-file limit).
GATEWAY_HEADER_TIMEOUT = env_float("GATEWAY_HEADER_TIMEOUT", 10.0)
GATEWAY_BODY_TIMEOUT = env_float("GATEWAY_BODY_TIMEOUT", 60.0)
GATEWAY_IDLE_TIMEOUT = env_float("GATEWAY_IDLE_TIMEOUT", 75.0)
GATEWAY_MAX_HEADER_BYTES = env_int("GATEWAY_MAX_HEADER_BYTES", 16 * 1024)
GATEWAY_MAX_CONNECTIONS = env_int("GATEWAY_MAX_CONNECTIONS", 1000)
GATEWAY_MAX_CONNECTIONS_PER_CLIENT = env_int("GATEWAY_MAX_CONNECTIONS_PER_CLIENT", 256)
# SIGTERM: stop taking requests, let those in flight finish for this long, then
# end what is left with an in-band error (gateway.edge.drain).
GATEWAY_SHUTDOWN_GRACE_SECONDS = env_float("GATEWAY_SHUTDOWN_GRACE_SECONDS", 30.0)

# Local inference.
GATEWAY_MODELS_DIR = Path(os.environ.get("GATEWAY_MODELS_DIR", DATA_DIR / "models")).resolve()
GATEWAY_MAX_RESIDENT_MODELS = env_int("GATEWAY_MAX_RESIDENT_MODELS", 2)
GATEWAY_MAX_BATCH_SIZE = env_int("GATEWAY_MAX_BATCH_SIZE", 32)
GATEWAY_PREFILL_STEP_SIZE = env_int("GATEWAY_PREFILL_STEP_SIZE", 2048)
# KV caches kept for prefix reuse, all local models together; unset: a quarter of
# physical memory; 0 turns the prompt cache off.
GATEWAY_PROMPT_CACHE_BYTES = (
    env_int("GATEWAY_PROMPT_CACHE_BYTES", 0)
    if os.environ.get("GATEWAY_PROMPT_CACHE_BYTES", "").strip()
    else None
)
GATEWAY_DEFAULT_MAX_TOKENS = env_int("GATEWAY_DEFAULT_MAX_TOKENS", 512)

# Routing: off, every model name is served by the local model of that name;
# on, names go through the BackendMapping table (local models and providers).
ENABLE_CLOUD_ROUTING = env_bool("ENABLE_CLOUD_ROUTING", False)
# Shared state across gateway processes (breakers, rate limits, channels).
REDIS_URL = os.environ.get("REDIS_URL", "").strip()
# The live dashboard's channel layer: in-process by default; through Redis
# when processes share it, so a dashboard sees every process's requests.
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": "gateway:channels"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# GET /metrics: with a token, scrapes must send it as a bearer token; without
# one, only loopback clients may scrape.
GATEWAY_METRICS_TOKEN = os.environ.get("GATEWAY_METRICS_TOKEN", "").strip()
# Distinct model names kept as metric labels; later ones are counted as "other".
GATEWAY_METRICS_MAX_MODELS = env_int("GATEWAY_METRICS_MAX_MODELS", 100)
# Budget for a whole request, all attempts together, when the primary target
# is a local model (a provider's own total_timeout applies otherwise).
GATEWAY_REQUEST_TIMEOUT = env_float("GATEWAY_REQUEST_TIMEOUT", 600.0)
# Until the first token of a local model (it may have to load first).
GATEWAY_LOCAL_FIRST_TOKEN_TIMEOUT = env_float("GATEWAY_LOCAL_FIRST_TOKEN_TIMEOUT", 120.0)
GATEWAY_LOCAL_BREAKER_FAIL_MAX = env_int("GATEWAY_LOCAL_BREAKER_FAIL_MAX", 3)
GATEWAY_LOCAL_BREAKER_RESET_SECONDS = env_float("GATEWAY_LOCAL_BREAKER_RESET_SECONDS", 30.0)
# How often a process checks the database for routing changes made elsewhere.
GATEWAY_ROUTING_REFRESH_SECONDS = env_float("GATEWAY_ROUTING_REFRESH_SECONDS", 1.0)

# Set: this process is a model server (manage.py serve_models): it serves its
# local models only, to callers presenting this key (the front tier's gateways,
# where it is a provider of kind model-server); client keys are not consulted.
GATEWAY_MODEL_SERVER_KEY = os.environ.get("GATEWAY_MODEL_SERVER_KEY", "").strip()
# Set (by `serve --workers N`, or by hand): this request worker's local models
# live in the model server at this URL (its /v1), reached with this key, instead
# of in this process; the routing still names them local:<name>.
GATEWAY_LOCAL_MODELS_URL = os.environ.get("GATEWAY_LOCAL_MODELS_URL", "").strip().rstrip("/")
GATEWAY_LOCAL_MODELS_KEY = os.environ.get("GATEWAY_LOCAL_MODELS_KEY", "").strip()

# Client API keys on every /v1 endpoint. Off: callers without a key (or with
# an unknown one) are let in; a known key still gets its models and limits.
GATEWAY_REQUIRE_API_KEYS = env_bool("GATEWAY_REQUIRE_API_KEYS", True)
# How soon a process sees keys created, changed or disabled by another one.
GATEWAY_API_KEYS_REFRESH_SECONDS = env_float("GATEWAY_API_KEYS_REFRESH_SECONDS", 1.0)
# The request log is written in batches: every so many ms, or once this many
# rows are waiting. Rows older than the retention are pruned (0: kept forever).
GATEWAY_REQUEST_LOG_FLUSH_MS = env_int("GATEWAY_REQUEST_LOG_FLUSH_MS", 500)
GATEWAY_REQUEST_LOG_BATCH_SIZE = env_int("GATEWAY_REQUEST_LOG_BATCH_SIZE", 500)
GATEWAY_REQUEST_LOG_RETENTION_DAYS = env_int("GATEWAY_REQUEST_LOG_RETENTION_DAYS", 30)

LOG_LEVEL = os.environ.get("GATEWAY_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    # Provider keys and bearer tokens never reach a log line (inference.scrub).
    "filters": {"redact": {"()": "inference.scrub.RedactingFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "daphne": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "httpx": {"level": "WARNING"},
    },
}
