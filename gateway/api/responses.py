"""The JSON response every view answers with (the protocols' bodies are built in
`inference.wire`; errors in `gateway.errors`)."""

from __future__ import annotations

from django.http import HttpResponse

from inference import jsonio


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    response = HttpResponse(jsonio.dumps(body), status=status, content_type="application/json")
    for key, value in (headers or {}).items():
        response[key] = value
    return response
