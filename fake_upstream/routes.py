"""Request routing: the API endpoints of both providers, and the control plane."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from . import anthropic_format
from .anthropic_format import ANTHROPIC
from .faults import (
    PREFILL_REFUSED,
    FailRule,
    Fault,
    FaultSpecError,
    Kind,
    parse_fault,
    resolve,
    rule_fault,
)
from .formats import InvalidBody, WireFormat
from .openai_format import OPENAI
from .replies import trailing_assistant_text
from .state import RecordedRequest, State
from .transmit import respond, send_body, send_stream
from .wire import Connection, Request

_JSON = b"content-type: application/json\r\nserver: fake-upstream\r\n"
_SSE = b"content-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
_SSE += b"server: fake-upstream\r\n"
_API_POSTS = {"/chat/completions", "/messages", "/messages/count_tokens"}


@dataclass(slots=True)
class Settings:
    api_keys: frozenset[str] | None  # None: any non-empty key is accepted
    models: list[str]
    reply_words: int


class Router:
    def __init__(self, settings: Settings, state: State) -> None:
        self.settings = settings
        self.state = state

    async def handle(self, conn: Connection, req: Request) -> None:
        # Clients may be configured with or without the /v1 prefix in their base URL.
        route = req.path[3:] if req.path.startswith("/v1/") else req.path
        if route.startswith("/_control/"):
            await self._control(conn, req, route)
        elif route in _API_POSTS:
            if req.method != "POST":
                await self._plain_error(conn, req, 405, "Method not allowed.")
            else:
                await self._api(conn, req, route)
        elif route == "/models" or route.startswith("/models/"):
            if req.method != "GET":
                await self._plain_error(conn, req, 405, "Method not allowed.")
            else:
                await self._models(conn, req, route)
        else:
            await self._plain_error(conn, req, 404, f"Unknown route {req.method} {req.path}.")

    # -- API ---------------------------------------------------------------------------

    async def _api(self, conn: Connection, req: Request, route: str) -> None:
        fmt: WireFormat = OPENAI if route == "/chat/completions" else ANTHROPIC
        rid = self.state.next_id()
        headers = _JSON + b"%b: req_%b\r\n" % (fmt.id_header.encode(), rid.encode())
        body: Any = None
        if req.body:
            try:
                body = orjson.loads(req.body)
            except orjson.JSONDecodeError:
                body = None
        parsed = body if isinstance(body, dict) else {}
        model = parsed.get("model") if isinstance(parsed.get("model"), str) else None
        stream = parsed.get("stream") is True
        attempt = self._record(conn, req, body, model, stream, fmt.name)

        if (denied := self._auth(req, fmt, rid)) is not None:
            await respond(conn, denied[0], headers, denied[1])
            return
        if not isinstance(body, dict):
            error = fmt.error_body(400, "The request body is not valid JSON.", rid, None)
            await respond(conn, 400, headers, error)
            return
        if model is None:
            await respond(
                conn, 400, headers, fmt.error_body(400, "model: Field required", rid, None)
            )
            return
        try:
            named = parse_fault(model)
            if route == "/messages/count_tokens":
                reply = None
                tokens_in = anthropic_format.input_tokens(body)
            else:
                reply = fmt.plan(body, named.words or self.settings.reply_words)
                tokens_in = reply.input_tokens
            # Rules are consumed only by requests that got this far, i.e. real attempts.
            fault = resolve(
                self.state.take_rule(model) or named,
                attempt,
                down_since=self.state.first_seen(model),
                now=time.monotonic(),
                prefill=bool(trailing_assistant_text(body.get("messages"))),
            )
        except (InvalidBody, FaultSpecError) as exc:
            message = exc.message if isinstance(exc, InvalidBody) else str(exc)
            await respond(conn, 400, headers, fmt.error_body(400, message, rid, model))
            return

        if await self._pre_response_fault(conn, fmt, fault, headers, rid, model, tokens_in, stream):
            return
        if reply is None:
            answer = orjson.dumps({"input_tokens": tokens_in})
            await send_body(conn, headers, answer, fault, 1)
        elif stream:
            plan = fmt.stream(reply, model, rid, body)
            sse = _SSE + b"%b: req_%b\r\n" % (fmt.id_header.encode(), rid.encode())
            await send_stream(conn, sse, plan, fault)
        else:
            answer = fmt.message_body(reply, model, rid)
            await send_body(conn, headers, answer, fault, reply.output_tokens)

    async def _pre_response_fault(
        self,
        conn: Connection,
        fmt: WireFormat,
        fault: Fault,
        headers: bytes,
        rid: str,
        model: str,
        tokens_in: int,
        stream: bool,
    ) -> bool:
        """Apply the faults that replace the answer entirely; True when one did."""
        kind = fault.kind
        if kind is Kind.STATUS:
            extra = headers
            if fault.number is not None:
                value = fault.number
                shown = str(int(value)) if value == int(value) else str(value)
                extra += b"retry-after: %b\r\n" % shown.encode()
            body = fmt.error_body(fault.status, None, rid, model)
            await respond(conn, fault.status, extra, body)
        elif kind is Kind.NO_PREFILL:
            await respond(conn, 400, headers, fmt.error_body(400, PREFILL_REFUSED, rid, model))
        elif kind is Kind.CONTENT_POLICY:
            await respond(conn, 400, headers, fmt.content_policy_body(rid))
        elif kind is Kind.CONTEXT_LENGTH:
            await respond(conn, 400, headers, fmt.context_length_body(tokens_in, rid))
        elif kind is Kind.RESET:
            conn.reset()
        elif kind is Kind.CLOSE:
            conn.close()
        elif kind is Kind.HANG:
            await conn.wait_for_peer_close()
        elif kind is Kind.STREAM_OVERLOADED and not stream:
            status = fmt.overloaded_status
            await respond(conn, status, headers, fmt.error_body(status, None, rid, model))
        else:
            return False
        return True

    def _auth(self, req: Request, fmt: WireFormat, rid: str) -> tuple[int, bytes] | None:
        hdrs = req.headers
        auth = hdrs.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        key = (hdrs.get("x-api-key") or bearer) if fmt is ANTHROPIC else bearer
        keys = self.settings.api_keys
        if not key or (keys is not None and key not in keys):
            return 401, fmt.auth_error(key, rid)
        if fmt is ANTHROPIC and not hdrs.get("anthropic-version"):
            return 400, fmt.error_body(400, "anthropic-version: header is required", rid, None)
        return None

    async def _models(self, conn: Connection, req: Request, route: str) -> None:
        anthropic = "anthropic-version" in req.headers or "x-api-key" in req.headers
        fmt: WireFormat = ANTHROPIC if anthropic else OPENAI
        rid = self.state.next_id()
        headers = _JSON + b"%b: req_%b\r\n" % (fmt.id_header.encode(), rid.encode())
        self._record(conn, req, None, None, False, fmt.name)
        if (denied := self._auth(req, fmt, rid)) is not None:
            await respond(conn, denied[0], headers, denied[1])
            return
        if route == "/models":
            await respond(conn, 200, headers, fmt.models_body(self.settings.models))
            return
        model = route.removeprefix("/models/")
        if model in self.settings.models:
            await respond(conn, 200, headers, fmt.model_body(model))
        else:
            await respond(conn, 404, headers, fmt.error_body(404, None, rid, model))

    def _record(
        self,
        conn: Connection,
        req: Request,
        body: Any,
        model: str | None,
        stream: bool,
        protocol: str,
    ) -> int:
        wall, mono = self.state.now()
        return self.state.record(
            RecordedRequest(
                method=req.method,
                path=req.path,
                query=req.query,
                headers=req.headers,
                json=body,
                body=req.body,
                model=model,
                stream=stream,
                protocol=protocol,
                connection=conn.id,
                received_at=wall,
                monotonic=mono,
            )
        )

    async def _plain_error(self, conn: Connection, req: Request, status: int, msg: str) -> None:
        anthropic = "anthropic-version" in req.headers or "x-api-key" in req.headers
        fmt: WireFormat = ANTHROPIC if anthropic else OPENAI
        rid = self.state.next_id()
        headers = _JSON + b"%b: req_%b\r\n" % (fmt.id_header.encode(), rid.encode())
        await respond(conn, status, headers, fmt.error_body(status, msg, rid, None))

    # -- control plane -----------------------------------------------------------------

    async def _control(self, conn: Connection, req: Request, route: str) -> None:
        query = {k: v[-1] for k, v in parse_qs(req.query).items()}
        model, path = query.get("model"), query.get("path")
        state = self.state
        status = 200
        payload: dict[str, Any] = {"ok": True}
        try:
            data = orjson.loads(req.body) if req.body else {}
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            match (req.method, route):
                case ("GET", "/_control/health"):
                    pass
                case ("GET", "/_control/requests"):
                    found = [r.to_dict() for r in state.requests(model, path)]
                    payload = {"count": len(found), "requests": found}
                case ("GET", "/_control/count"):
                    payload = {"count": state.count(model, path)}
                case ("GET", "/_control/rules"):
                    payload = {"rules": state.rules()}
                case ("POST", "/_control/fail"):
                    add_fail_rule(state, data)
                    payload = {"ok": True, "rules": state.rules()}
                case ("POST", "/_control/clear"):
                    state.clear_rules()
                case ("POST", "/_control/reset"):
                    state.reset()
                case _:
                    status, payload = 404, {"error": f"unknown control {req.method} {route}"}
        except (ValueError, TypeError, FaultSpecError) as exc:
            status, payload = 400, {"error": str(exc)}
        await respond(conn, status, _JSON, orjson.dumps(payload))


def add_fail_rule(state: State, data: dict[str, Any]) -> None:
    """``{"model": glob, "status": 503, "count": 1, "retry_after": s, "fault": spec}``."""
    count = data.get("count", 1)
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ValueError("count must be a positive integer or null (until cleared)")
    retry_after = data.get("retry_after")
    fault = rule_fault(
        data.get("status"),
        float(retry_after) if retry_after is not None else None,
        data.get("fault"),
    )
    state.add_rule(FailRule(str(data.get("model", "*")), fault, count))
