"""corral-scheduler: run the control plane until SIGTERM or SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web

from common.config import ConfigError, load_config
from scheduler.api.app import create_app
from scheduler.config import ENV_PREFIX, SchedulerConfig

_LOGGER = logging.getLogger("scheduler")


async def serve(config: SchedulerConfig) -> None:
    # The scheduler keeps every object in memory: millions of long-lived objects
    # that the cyclic GC would otherwise traverse again and again. Collect the
    # young generation less often; frozen startup objects are never traversed.
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await site.start()
        for sock in site._server.sockets if site._server else []:  # the real port when 0 was asked
            host, port = sock.getsockname()[:2]
            _LOGGER.info("serving the API on http://%s:%d", host, port)
            print(f"corral-scheduler listening on http://{host}:{port}", flush=True)
        await stop.wait()
        _LOGGER.info("shutting down")
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(
            SchedulerConfig,
            argv,
            prog="corral-scheduler",
            description="corral's control plane: the API, the store, placement and node health.",
            env_prefix=ENV_PREFIX,
        )
    except ConfigError as exc:
        print(f"corral-scheduler: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(config))
    except OSError as exc:
        print(f"corral-scheduler: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
