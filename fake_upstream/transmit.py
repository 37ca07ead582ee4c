"""Sending answers, with the in-response faults (slow, cut, stall, malformed) applied.

Consecutive bytes are joined into one write: a healthy answer costs a single
send, and data is only flushed early where a fault needs the client to have it
(before a delay, a cut or a stall).
"""

from __future__ import annotations

import asyncio

from .faults import Fault, Kind
from .formats import StreamPlan
from .wire import CHUNK_END, Connection, chunk

_AT_TOKEN = {Kind.CUT_AFTER, Kind.STALL_AFTER, Kind.MALFORMED, Kind.STREAM_OVERLOADED}
MALFORMED_JSON = b'{"id": "broken", "object": this is not json'


async def respond(conn: Connection, status: int, headers: bytes, body: bytes) -> None:
    await conn.send(conn.head(status, headers, length=len(body)) + body)


async def send_body(
    conn: Connection, headers: bytes, body: bytes, fault: Fault, tokens: int
) -> None:
    """A 200 JSON answer, degraded by the stream-shaped faults where they make sense."""
    kind = fault.kind
    if kind is Kind.SLOW_FIRST_TOKEN:
        await asyncio.sleep(fault.number or 0)
    elif kind is Kind.SLOW_TOKENS:
        await asyncio.sleep((fault.number or 0) * tokens)
    elif kind is Kind.MALFORMED:
        body = MALFORMED_JSON
    elif kind is Kind.SLOW_BODY:
        half = len(body) // 2
        await conn.send(conn.head(200, headers, length=len(body)) + body[:half])
        await asyncio.sleep(fault.number or 0)
        await conn.send(body[half:])
        return
    elif kind in (Kind.CUT_AFTER, Kind.STALL_AFTER):
        # Promise the whole body, deliver half: the client sees a truncated answer.
        await conn.send(conn.head(200, headers, length=len(body)) + body[: len(body) // 2])
        if kind is Kind.CUT_AFTER:
            conn.close()
        else:
            await conn.wait_for_peer_close()
        return
    await respond(conn, 200, headers, body)


async def send_stream(conn: Connection, headers: bytes, plan: StreamPlan, fault: Fault) -> None:
    framed = not conn.http10
    frame = chunk if framed else _identity
    buf = [conn.head(200, headers, length=None)]
    buf += [frame(event) for event in plan.preamble]
    kind = fault.kind
    tokens = plan.tokens
    at = min(fault.count, len(tokens)) if kind in _AT_TOKEN else -1
    slow_first = kind in (Kind.SLOW_FIRST_TOKEN, Kind.SLOW_BODY)
    first_delay = (fault.number or 0) if slow_first else 0.0
    each_delay = (fault.number or 0) if kind is Kind.SLOW_TOKENS else 0.0

    for i in range(len(tokens) + 1):
        if i == at:
            if kind is Kind.MALFORMED:
                buf.append(frame(plan.malformed))
            elif kind is Kind.STREAM_OVERLOADED:
                buf.append(frame(plan.error))
                if framed:
                    buf.append(CHUNK_END)
                await conn.send(b"".join(buf))
                return
            else:
                await conn.send(b"".join(buf))
                if kind is Kind.CUT_AFTER:
                    conn.close()
                else:
                    await conn.wait_for_peer_close()
                return
        if i == len(tokens):
            break
        delay = each_delay or (first_delay if i == 0 else 0.0)
        if delay:
            await conn.send(b"".join(buf))
            buf.clear()
            await asyncio.sleep(delay)
        buf.append(frame(tokens[i]))

    if first_delay and not tokens:
        await conn.send(b"".join(buf))
        buf.clear()
        await asyncio.sleep(first_delay)
    buf += [frame(event) for event in plan.epilogue]
    if kind is not Kind.NO_DONE:
        buf += [frame(event) for event in plan.terminator]
    if framed:
        buf.append(CHUNK_END)
    await conn.send(b"".join(buf))


def _identity(data: bytes) -> bytes:
    return data
