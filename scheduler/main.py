"""corral-scheduler: run the control plane until SIGTERM or SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys

from aiohttp import web

from common import eventloop
from common.config import ConfigError, load_config
from common.heap import GcPacer
from common.logs import setup_logging
from common.sdnotify import Notifier
from scheduler import service
from scheduler.api.app import create_app
from scheduler.api.common import CONTROL_PLANE
from scheduler.config import ENV_PREFIX, SchedulerConfig
from scheduler.transport import listener

_LOGGER = logging.getLogger("scheduler")


async def serve(config: SchedulerConfig, ssl_context: ssl.SSLContext | None = None) -> None:
    with GcPacer() as gc_pacer:
        app = create_app(config)
        app[CONTROL_PLANE].metrics.track_gc(gc_pacer)
        await _serve(app, config, ssl_context)


async def _serve(
    app: web.Application, config: SchedulerConfig, ssl_context: ssl.SSLContext | None
) -> None:
    # The signals first: a SIGTERM while the control plane starts (loading the store takes
    # about 1 s for 10,000 pods) killed the process outright, exit status -15, undrained.
    # Now it cancels the start (which lets go of what it took: store, lock) and exits 0.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    scheme = "https" if ssl_context is not None else "http"
    notifier = Notifier.from_environment()  # systemd's Type=notify (no-op outside systemd)
    keepalive: asyncio.Task[None] | None = None
    try:
        site = await _started(runner, config, ssl_context, stop)
        if site is None:
            _LOGGER.info("stopped while starting")
            return
        for address in runner.addresses:  # the real port when 0 was asked
            host, port = address[:2]
            _LOGGER.info("serving the API on %s://%s:%d", scheme, host, port)
            print(f"corral-scheduler listening on {scheme}://{host}:{port}", flush=True)
        keepalive = service.announce(notifier, app[CONTROL_PLANE], site)
        await stop.wait()
        notifier.notify("STOPPING=1", "STATUS=shutting down")
        _LOGGER.info("shutting down")
    finally:
        if keepalive is not None:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _started(
    runner: web.AppRunner,
    config: SchedulerConfig,
    ssl_context: ssl.SSLContext | None,
    stop: asyncio.Event,
) -> web.TCPSite | None:
    """Start the application and its site; None if `stop` was set first (the start is
    cancelled then, and has undone itself: runner.cleanup() does the rest)."""

    async def start() -> web.TCPSite:
        await runner.setup()
        site = web.TCPSite(
            runner,
            config.host,
            config.port,
            backlog=1024,
            reuse_address=True,
            ssl_context=ssl_context,
        )
        await site.start()
        return site

    starting = asyncio.create_task(start(), name="start")
    stopping = asyncio.create_task(stop.wait(), name="stop-while-starting")
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not starting.done():
            starting.cancel()
        await asyncio.gather(stopping, return_exceptions=True)
        await asyncio.wait({starting})
    if starting.cancelled():
        return None
    return starting.result()  # or the start's own error (a port in use: OSError)


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(
            SchedulerConfig,
            argv,
            prog="corral-scheduler",
            description="corral's control plane: the API, the store, placement and node health.",
            env_prefix=ENV_PREFIX,
        )
        ssl_context, insecure = listener(config)
    except ConfigError as exc:
        print(f"corral-scheduler: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format)
    if insecure:
        _LOGGER.warning("%s", insecure)
    try:
        eventloop.run(serve(config, ssl_context))
    except OSError as exc:
        print(f"corral-scheduler: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
