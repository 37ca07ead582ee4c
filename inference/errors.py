"""Domain errors raised by backends and the routing layer.

They carry what the HTTP layer needs (a status and a kind) but no wire format:
`gateway.errors` renders them in the caller's protocol, in one place.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Base class: something the client should be told about, with a status."""

    status: int = 500
    kind: str = "api_error"  # one of ErrorKind in gateway.errors
    code: str | None = None
    retry_after: float | None = None  # seconds, when the caller may try again
    # A routing failure carries its walk (routing.served.Served) to the request log.
    served: Any = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class InvalidRequest(GatewayError):
    status = 400
    kind = "invalid_request"


class UnsupportedFeature(InvalidRequest):
    code = "unsupported_feature"

    @classmethod
    def of_extensions(cls, extensions: dict[str, object], backend: str) -> UnsupportedFeature:
        """A refusal of a request's protocol extensions, which are named by where
        they are ("context_management", "messages.0.content.2 (document block)")."""
        names = sorted(extensions)
        return cls(f"{backend} does not support: {', '.join(names)}", param=names[0].split()[0])


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ModelNotFound(GatewayError):
    status = 404
    kind = "not_found"
    code = "model_not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    kind = "request_too_large"
    code = "request_too_large"


class AuthenticationFailed(GatewayError):
    status = 401
    kind = "authentication"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    kind = "permission"
    code = "model_not_allowed"


class RateLimited(GatewayError):
    status = 429
    kind = "rate_limit"
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.retry_after = retry_after


class BackendUnavailable(GatewayError):
    """The backend cannot take the request now (overloaded, breaker open, no slot)."""

    status = 503
    kind = "overloaded"
    code = "backend_unavailable"


class EngineError(GatewayError):
    """The local engine failed while serving the request (load error, OOM, bug)."""

    status = 500
    kind = "api_error"
    code = "engine_error"


class ModelLoadError(EngineError):
    code = "model_load_failed"
