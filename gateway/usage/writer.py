"""The request log, written off the request path.

The finish listener (`record`) only turns the request's record into a row and
appends it to an in-memory buffer. A writer thread, with its own database
connection, writes the buffer in batches (`bulk_create`) every
GATEWAY_REQUEST_LOG_FLUSH_MS, or sooner once GATEWAY_REQUEST_LOG_BATCH_SIZE
rows wait, and prunes rows past the retention once an hour. `stop` writes what
is left: on a clean shutdown (`gateway.startup.shutdown`) and at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import DatabaseError, DataError, IntegrityError, close_old_connections, connection

from gateway.costs import cost_of

from .services import prune_request_log, write_request_logs

if TYPE_CHECKING:
    from gateway.record import RequestContext

logger = logging.getLogger(__name__)

# Beyond this many unwritten rows (the database is down), new rows are dropped:
# the gateway keeps answering instead of filling its memory.
MAX_BUFFERED = 100_000
PRUNE_EVERY = 3600.0

_buffer: deque[dict[str, Any]] = deque()
_flush_lock = threading.Lock()
_writer_lock = threading.Lock()
_writer: _Writer | None = None
_exit_hook = False
_dropped = 0


# Column ranges (PositiveSmallIntegerField, PositiveIntegerField on every database).
SMALL, LARGE = 32767, 2147483647


def _text(value: str, limit: int) -> str:
    # Client-chosen text (a model name) may hold NUL, which PostgreSQL refuses.
    return value.replace("\x00", "")[:limit]


def _count(value: int, limit: int) -> int:
    return min(max(int(value), 0), limit)  # a bogus upstream usage must not fail the row


def row(ctx: RequestContext) -> dict[str, Any]:
    """RequestLog field values for a finished request, each valid for its column."""
    served = ctx.served
    ttft = ctx.ttft_ms
    return {
        "created_at": datetime.fromtimestamp(ctx.started_at, UTC),
        "api_key_id": ctx.api_key.id if ctx.api_key is not None else None,
        "protocol": ctx.protocol,
        "endpoint": _text(ctx.endpoint, 64),
        "requested_model": _text(ctx.requested_model, 200),
        "backend": _text(served.backend, 200) if served else "",
        "served_model": _text(served.model, 200) if served else "",
        # As before the walk carried it: named for answered requests only.
        "mapping": _text(served.mapping, 200) if served and served.backend else "",
        "attempts": _count(len(served.attempts), SMALL) if served else 0,
        "fallbacks": _count(served.fallbacks, SMALL) if served else 0,
        "attempt_trail": _text(served.trail, 1000) if served else "",
        "stream": ctx.stream,
        "status": _count(ctx.status, SMALL),
        "error_type": _text(ctx.error_type, 64),
        "error_message": _text(ctx.error_message, 500),
        "input_tokens": _count(ctx.input_tokens, LARGE),
        "output_tokens": _count(ctx.output_tokens, LARGE),
        "cached_tokens": _count(ctx.cached_tokens, LARGE),
        "cost": cost_of(ctx),
        "latency_ms": round(ctx.latency_ms, 1),
        "ttft_ms": round(ttft, 1) if ttft is not None else None,
    }


def record(ctx: RequestContext) -> None:
    """Finish listener: buffer the request's row; the writer thread does the I/O."""
    global _dropped
    if len(_buffer) >= MAX_BUFFERED:
        _dropped += 1
        if _dropped == 1 or _dropped % 10_000 == 0:
            logger.error("request log: %d rows dropped, the buffer is full", _dropped)
        return
    _buffer.append(row(ctx))
    writer = _writer or start()
    if len(_buffer) >= settings.GATEWAY_REQUEST_LOG_BATCH_SIZE:
        writer.wake()


def pending() -> int:
    return len(_buffer)


def flush() -> int:
    """Write every buffered row now, in batches.

    When the database cannot be reached the batch stays buffered for the next
    pass. When the database refuses the data, the batch is written row by row
    and a row it still refuses is dropped (and logged): one bad row must not
    hold up every row behind it.
    """
    written = 0
    size = max(1, settings.GATEWAY_REQUEST_LOG_BATCH_SIZE)
    with _flush_lock:
        while _buffer:
            batch = [_buffer.popleft() for _ in range(min(size, len(_buffer)))]
            try:
                close_old_connections()  # a connection dropped by the server, or too old
                written += write_request_logs(batch)
            except (DataError, IntegrityError):
                written += _one_by_one(batch)
            except DatabaseError:
                logger.exception("request log: writing %d rows failed, retrying", len(batch))
                _buffer.extendleft(reversed(batch))
                break
    return written


def _one_by_one(batch: list[dict[str, Any]]) -> int:
    written = 0
    for i, item in enumerate(batch):
        try:
            written += write_request_logs([item])
        except (DataError, IntegrityError) as exc:
            logger.error(
                "request log: dropped a row the database refused (%s %s at %s): %s",
                item.get("endpoint"), item.get("status"), item.get("created_at"), exc,
            )  # fmt: skip
        except DatabaseError:
            # The database went away meanwhile: the rest waits for the next pass.
            _buffer.extendleft(reversed(batch[i:]))
            break
    return written


class _Writer(threading.Thread):
    def __init__(self) -> None:
        # A daemon, so it never holds the interpreter open; `stop` drains it at exit.
        super().__init__(name="request-log-writer", daemon=True)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._prune_at = 0.0  # at once, then every PRUNE_EVERY seconds

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self._wake.set()
        self.join(timeout)

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wake.wait(settings.GATEWAY_REQUEST_LOG_FLUSH_MS / 1000)
                self._wake.clear()
                try:
                    flush()
                    self._prune()
                except Exception:  # this thread must outlive any one bad pass
                    logger.exception("request log: a writing pass failed")
        finally:
            flush()
            connection.close()

    def _prune(self) -> None:
        days = settings.GATEWAY_REQUEST_LOG_RETENTION_DAYS
        if days <= 0 or time.monotonic() < self._prune_at:
            return
        self._prune_at = time.monotonic() + PRUNE_EVERY
        try:
            deleted = prune_request_log(days)
        except DatabaseError:
            logger.exception("request log: pruning failed")
            return
        if deleted:
            logger.info("request log: pruned %d rows older than %d days", deleted, days)


def start() -> _Writer:
    """The writer thread (started at most once); it also prunes past the retention."""
    global _writer, _exit_hook
    with _writer_lock:
        if _writer is None:
            _writer = _Writer()
            _writer.start()
            if not _exit_hook:
                _exit_hook = True
                atexit.register(stop)
        return _writer


def stop(timeout: float = 10.0) -> int:
    """Stop the writer and write what is left; returns how many rows were still waiting."""
    global _writer
    waiting = len(_buffer)
    with _writer_lock:
        writer, _writer = _writer, None
    if writer is not None:
        writer.stop(timeout)
    if _buffer:  # rows that arrived after the writer's last pass
        flush()
        connection.close()
    if _buffer:
        logger.error("request log: %d rows could not be written", len(_buffer))
    return waiting
