"""A fake OpenAI + Anthropic upstream for tests and benchmarks (no Django, no network).

It speaks the real wire formats over HTTP/1.1 (keep-alive, chunked SSE streams)
on raw asyncio streams, so it can also misbehave the way real upstreams do:
reset connections, hang, stall or cut streams. The requested model name picks
the behaviour; see :mod:`fake_upstream.faults` for the table.

Endpoints (with or without the ``/v1`` prefix):

- ``POST /v1/chat/completions`` (OpenAI; ``Authorization: Bearer``)
- ``POST /v1/messages``, ``POST /v1/messages/count_tokens`` (Anthropic; ``x-api-key``
  or Bearer, plus ``anthropic-version``)
- ``GET /v1/models`` and ``GET /v1/models/{id}``: Anthropic format when the request
  carries ``anthropic-version`` or ``x-api-key``, OpenAI format otherwise
- ``/_control/...`` (no auth): ``GET health``, ``GET requests?model=&path=``,
  ``GET count?model=&path=``, ``GET rules``, ``POST fail`` (body
  ``{"model": glob, "status": 503, "count": 1, "retry_after": null, "fault": null}``),
  ``POST clear``, ``POST reset``

Answers: ``echo: <last user or tool-result text>`` padded with filler words to
``reply_words`` words (one word = one token), cut to ``max_tokens``. With
``tools`` and a fresh user turn last, the first tool is called instead, with
arguments derived from its JSON schema.

In-process use::

    server = FakeUpstream(api_keys={"sk-test"})
    await server.start()            # or server.start_in_thread() from sync code
    ...server.url, server.requests, server.count(model="x"), server.fail_next("x")
    await server.stop()             # or server.stop_thread()

Standalone: ``python -m fake_upstream --host 127.0.0.1 --port 9100`` (from the
repository's root).

A test tool, not part of the gateway: a top-level package that pyproject's
``packages.find`` leaves out of the installed distribution, and independent of
what it tests: it imports nothing from ``gateway``, ``routing`` or ``inference``
(its wire formats are written again here from the providers' documentation, so
a mistake in ``inference.wire`` cannot hide behind the same mistake in the fake).
``tests/test_layout.py`` holds both to that.
"""

from .faults import Fault, FaultSpecError, Kind, parse_fault
from .server import FakeUpstream
from .state import RecordedRequest

__all__ = ["FakeUpstream", "Fault", "FaultSpecError", "Kind", "RecordedRequest", "parse_fault"]
