"""Run the fake upstream on its own: ``python -m fake_upstream --port 9100``.

Prints one line, ``fake-upstream listening on http://HOST:PORT``, once it accepts
connections, so a parent process started with ``--port 0`` can read the port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from .formats import DEFAULT_MODELS
from .server import FakeUpstream


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fake_upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help="accepted key (repeatable); default: any non-empty key",
    )
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        help=f"model listed by GET /v1/models (repeatable; default: {', '.join(DEFAULT_MODELS)})",
    )
    parser.add_argument("--reply-words", type=int, default=16)
    parser.add_argument(
        "--no-record",
        action="store_true",
        help="keep counters only, not request bodies (flat memory for long benchmarks)",
    )
    parser.add_argument("--max-recorded", type=int, default=10_000)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    server = FakeUpstream(
        args.host,
        args.port,
        api_keys=args.api_keys,
        models=args.models or DEFAULT_MODELS,
        reply_words=args.reply_words,
        record=not args.no_record,
        max_recorded=args.max_recorded,
    )
    await server.start()
    print(f"fake-upstream listening on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
