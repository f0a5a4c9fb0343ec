"""``styleserve-server``: reads the settings, serves until SIGTERM/SIGINT, drains, exits 0.

Exit status: 0 after a graceful stop, 1 when the server could not get ready (e.g. no weight
artifact: the message names the ``styleserve-export`` command to run; a port it cannot bind),
2 for bad settings.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from styleserve_server import logs
from styleserve_server.app import create_server
from styleserve_server.settings import Settings

__all__ = ["main"]

log = logging.getLogger("styleserve_server")


async def serve(settings: Settings) -> int:
    """Runs the server until a stop signal; returns the process's exit status."""
    try:
        server, port = create_server(settings)
    except RuntimeError as error:  # a port it cannot bind: the message says what to change
        log.error("cannot serve: %s", error)
        return 1
    await server.start()
    log.info(
        "listening",
        extra={
            "host": settings.host,
            "port": port,
            "tls": settings.uses_tls,
            "mtls": settings.tls_client_ca_file is not None,
            "health_port": server.health_port,
            "metrics_port": settings.metrics_port,
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ready = asyncio.ensure_future(server.wait_ready())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done() and ready.exception() is not None:
        log.error("cannot serve: %s", ready.exception())
        stopping.cancel()
        await server.stop(grace=0)
        return 1
    await stopping
    log.info("stop signal: draining", extra={"grace_seconds": settings.grace_seconds})
    await server.stop()
    ready.cancel()
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_args(argv)
    except ValidationError as error:
        print(f"styleserve-server: invalid settings:\n{error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
