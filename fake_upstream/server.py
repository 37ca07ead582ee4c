"""The FakeUpstream server object: lifecycle, connection loop and the Python test API."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from .faults import FailRule, rule_fault
from .formats import DEFAULT_MODELS
from .routes import Router, Settings
from .state import RecordedRequest, State
from .transmit import respond
from .wire import HEAD_LIMIT, BadRequest, Connection

log = logging.getLogger(__name__)


class FakeUpstream:
    """A loopback OpenAI + Anthropic API with fault injection; see the package docstring.

    ``port=0`` picks a free port (read it back from ``url``/``port`` after start).
    ``api_keys=None`` accepts any non-empty key. ``reply_words`` is the length of
    every text answer (``max_tokens`` can cut it). ``record=False`` or a small
    ``max_recorded`` keeps memory flat under benchmark load; counts stay exact.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_keys: Iterable[str] | None = None,
        models: Iterable[str] = DEFAULT_MODELS,
        reply_words: int = 16,
        record: bool = True,
        max_recorded: int = 10_000,
        backlog: int = 1024,
    ) -> None:
        if reply_words < 1:
            raise ValueError("reply_words must be >= 1")
        self.host = host
        self._port = port
        self._backlog = backlog
        self.state = State(record=record, max_recorded=max_recorded)
        keys = frozenset(api_keys) if api_keys is not None else None
        self.router = Router(Settings(keys, list(models), reply_words), self.state)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # -- addresses ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeUpstream is not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Self:
        """Listen on the running event loop."""
        if self._server is not None:
            raise RuntimeError("FakeUpstream is already started")
        self._server = await asyncio.start_server(
            self._serve, self.host, self._port, limit=HEAD_LIMIT, backlog=self._backlog
        )
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and drop every open connection (hung ones included)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    def start_in_thread(self, timeout: float = 10.0) -> Self:
        """Run on a private event loop in a daemon thread, for synchronous tests."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstream thread is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread_loop = loop
        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("FakeUpstream thread did not start")
        if failure:
            self._thread = self._thread_loop = None
            raise failure[0]
        return self

    def stop_thread(self, timeout: float = 10.0) -> None:
        loop, thread = self._thread_loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = self._thread_loop = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __enter__(self) -> Self:
        return self.start_in_thread()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_thread()

    # -- inspection and control (thread-safe) --------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the recorded API requests, oldest first."""
        return self.state.requests()

    @property
    def last_request(self) -> RecordedRequest | None:
        found = self.state.requests()
        return found[-1] if found else None

    def find(self, model: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        return self.state.requests(model, path)

    @property
    def abandoned(self) -> int:
        """Answers cut short because the client went away (since the last reset)."""
        return self.state.abandoned

    def count(self, model: str | None = None, path: str | None = None) -> int:
        """Attempts seen (exact even when recording is capped or off)."""
        return self.state.count(model, path)

    def reset(self) -> None:
        """Forget requests, counters (the "once" faults fire again) and fail rules."""
        self.state.reset()

    def fail_next(
        self,
        model: str = "*",
        *,
        status: int | None = 503,
        count: int | None = 1,
        retry_after: float | None = None,
        fault: str | None = None,
    ) -> None:
        """Make the next ``count`` requests whose model matches the glob ``model`` fail.

        With ``fault`` (any model-name spec, e.g. ``"fault-reset"``) that fault is used
        instead of a plain ``status``. ``count=None`` keeps failing until cleared.
        """
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 or None")
        self.state.add_rule(FailRule(model, rule_fault(status, retry_after, fault), count))

    def clear_failures(self) -> None:
        self.state.clear_rules()

    # -- connections -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection(self.state.next_connection(), reader, writer)
        try:
            while conn.keep_alive and not conn.closing:
                try:
                    req = await conn.read_request()
                except BadRequest as exc:
                    conn.keep_alive = False
                    body = b'{"error": {"message": "%b", "type": "invalid_request_error"}}'
                    body %= exc.message.encode()
                    await respond(conn, exc.status, b"content-type: application/json\r\n", body)
                    break
                if req is None:
                    break
                await self.router.handle(conn, req)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.state.abandoned += 1  # the peer went away mid-request or mid-answer
        except asyncio.CancelledError:
            # Only stop() cancels these tasks. Not re-raising: asyncio's done-callback for
            # client_connected_cb calls task.exception(), which would raise and log noise.
            conn.transport.abort()
        except Exception:
            log.exception("fake upstream: unexpected error on connection %d", conn.id)
            conn.transport.abort()
        finally:
            self._tasks.discard(task)
            if not conn.closing:
                conn.transport.close()
