"""Request schema of Anthropic's Messages API, as far as the gateway reads it.

Unknown fields are kept (`extra="allow"`): a request forwarded to an Anthropic
upstream must not lose them, and a backend that cannot honour one says so.
Values are strict (`max_tokens: "5"` or `true` is a 400, not a 5 or a 1), as
Anthropic's own API is.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from ..common import ModelName
from ..common import Open as _Open


class TextBlock(_Open):
    type: Literal["text"]
    text: str


class Base64Source(_Open):
    type: Literal["base64"]
    media_type: str = Field(min_length=1)
    data: str


class UrlSource(_Open):
    type: Literal["url"]
    url: str = Field(min_length=1)


class OtherSource(_Open):
    """A source kind the gateway does not model (say, `file`): kept for an
    Anthropic upstream, refused by any other backend."""

    type: str


def _tagged(known: set[str]) -> Any:
    """A union's branch by the value's `type`, unknown types to the `other` branch."""

    def tag(value: Any) -> str:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        # A client may send any JSON as `type`: a list or an object is no known
        # kind (and unhashable), so it goes to `other`, whose `str` refuses it.
        return kind if isinstance(kind, str) and kind in known else "other"

    return Discriminator(tag)


ImageSource = Annotated[
    Annotated[Base64Source, Tag("base64")]
    | Annotated[UrlSource, Tag("url")]
    | Annotated[OtherSource, Tag("other")],
    _tagged({"base64", "url"}),
]


class ImageBlock(_Open):
    type: Literal["image"]
    source: ImageSource


class ToolUseBlock(_Open):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class OtherBlock(_Open):
    """A block kind the gateway does not model (document, search_result,
    server_tool_use...): kept for an Anthropic upstream, refused by any other."""

    type: str = Field(min_length=1)


ToolResultContent = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[OtherBlock, Tag("other")],
    _tagged({"text", "image"}),
]


class ToolResultBlock(_Open):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[ToolResultContent] | None = None
    is_error: bool = False


class ThinkingBlock(_Open):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Open):
    type: Literal["redacted_thinking"]
    data: str


BLOCK_TYPES = {"text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking"}
ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated[OtherBlock, Tag("other")],
    _tagged(BLOCK_TYPES),
]


class MessageParam(_Open):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolDef(_Open):
    # Server tools (web search, code execution...) carry another `type` and no
    # input_schema; only an Anthropic upstream can run them: kept for it, and
    # refused by any other backend.
    type: str | None = None
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] | None = None

    @property
    def custom(self) -> bool:
        return self.type in (None, "custom")

    @model_validator(mode="after")
    def _schema_for_custom_tools(self) -> ToolDef:
        if self.custom and self.input_schema is None:
            raise ValueError("input_schema is required for custom tools")
        return self


class ToolChoiceParam(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(_Open):
    user_id: str | None = None


class ThinkingParam(_Open):
    type: str = Field(min_length=1)  # "enabled", "disabled", or a newer kind
    budget_tokens: int | None = Field(default=None, ge=0)


class CountTokensRequest(_Open):
    """The body of /v1/messages/count_tokens: the prompt, without generation settings."""

    model: ModelName
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingParam | None = None


class MessagesRequest(CountTokensRequest):
    """The body of /v1/messages."""

    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stream: bool = False
    metadata: Metadata | None = None
