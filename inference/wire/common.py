"""What both wire protocols share: the schemas' base and field types, reading a
request body, pydantic errors as one message, the unmodelled-fields rule, and
the end an upstream stream decoder keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, StringConstraints

from ..errors import InvalidRequest
from ..types import MAX_MODEL_NAME, Finish, FinishReason, Usage

# A model name is client-chosen and travels into caches, metric labels, log
# rows and response headers: bounded, and without control characters (a CR/LF
# would break the X-Gateway-Model header after the upstream was already paid).
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_MODEL_NAME, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class Open(BaseModel):
    """A wire object: unknown fields kept (an upstream of the same protocol must
    not lose them), values strict (`max_tokens: "5"` is a 400, as the real APIs do)."""

    model_config = ConfigDict(extra="allow", strict=True)


class MalformedResponse(ValueError):
    """An upstream's answer that cannot be read; the cloud client says which provider."""


def decode_json(body: bytes) -> object:
    """A request body as JSON, or a 400 that says why not."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None


def validation_message(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """A readable message and the offending parameter from pydantic's error list."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "payload")]
    param = ".".join(loc) or None
    message = first.get("msg", "invalid request")
    if param:
        message = f"{param}: {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return message, param


def extensions(
    data: dict[str, Any], modelled: set[str], neutral: Mapping[str, tuple[Any, ...]]
) -> dict[str, Any]:
    """The request's fields the internal form does not model, less those whose
    value is the same as not asking (`neutral`): protocol extensions a backend
    must either honour or refuse."""
    return {
        key: value
        for key, value in data.items()
        if key not in modelled and value not in neutral.get(key, (None,))
    }


class StreamEnd:
    """What an upstream stream decoder keeps for the Finish at the end: why it
    finished (None until the upstream said), which stop string, the usage."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.reason: FinishReason | None = None
        self.stop_sequence: str | None = None

    def finish(self) -> Finish | None:
        """The answer's end; None when the upstream never said why (a truncated stream)."""
        if self.reason is None:
            return None
        return Finish(reason=self.reason, usage=self.usage, stop_sequence=self.stop_sequence)
