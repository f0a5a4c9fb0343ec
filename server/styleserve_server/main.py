"""``styleserve-server``: reads the settings, serves until SIGTERM/SIGINT, drains, exits 0.

Exit status: 0 after a graceful stop, 1 when the server could not get ready (e.g. no weight
artifact: the message names the ``styleserve-export`` command to run; a port it cannot bind),
2 for bad settings.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from pydantic import ValidationError

from styleserve_server import logs
from styleserve_server.app import create_server
from styleserve_server.settings import Settings

__all__ = ["main", "misspelt", "problems"]

# The prefix of the settings' environment variables.
_PREFIX = Settings.model_config["env_prefix"]

log = logging.getLogger("styleserve_server")


async def serve(settings: Settings) -> int:
    """Runs the server until a stop signal; returns the process's exit status."""
    try:
        server, port = create_server(settings)
    except RuntimeError as error:  # a port it cannot bind: the message says what to change
        log.error("cannot serve: %s", error)
        return 1
    try:
        await server.start()
    except RuntimeError as error:  # the metrics port: the message says what to change
        log.error("cannot serve: %s", error)
        await server.stop(grace=0)
        return 1
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


def problems(error: ValidationError) -> list[str]:
    """One line per problem of the settings, naming the flag and the variable that set it,
    and never a value it was given: pydantic's own text shows them all, the auth token's
    included, in the logs a container's output goes to."""
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        name = str(problem["loc"][0]) if problem["loc"] else ""
        where = f"--{name.replace('_', '-')} ({_PREFIX}{name.upper()}): " if name else ""
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(f"styleserve-server: {where}{message}")
    return lines


def misspelt(environment: Mapping[str, str]) -> list[str]:
    """A line for each ``STYLESERVE_`` variable of ``environment`` that names no setting but
    nearly names one (pydantic ignores it: the server would start on the default). Others
    are left alone: the client's ``STYLESERVE_SERVER`` and ``STYLESERVE_TOKEN`` share the
    prefix."""
    known = [name.upper() for name in Settings.model_fields]
    lines = []
    for variable in sorted(environment):
        name = variable.removeprefix(_PREFIX)
        if name == variable or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            lines.append(
                f"styleserve-server: {variable} names no setting (did you mean"
                f" {_PREFIX}{close[0]}?); ignored"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_args(argv)
    except ValidationError as error:
        print("\n".join(problems(error)), file=sys.stderr)
        return 2
    for line in misspelt(os.environ):
        print(line, file=sys.stderr)
    logs.configure(settings.log_level, settings.log_format)
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
