"""corral-agent: run this node's pods for the scheduler; `corral-agent image ...` manages images.

SIGTERM or SIGINT stops the agent and leaves every pod running: the next agent
re-adopts them (pods outlive the agent process).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from agent.config import ENV_PREFIX, AgentConfig
from common.config import ConfigError, load_config

_LOGGER = logging.getLogger("agent")


def read_token(config: AgentConfig) -> str:
    if config.join_token:
        return config.join_token
    if config.join_token_file:
        try:
            return Path(config.join_token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read join_token_file {config.join_token_file}: {exc.strerror}"
            ) from None
    raise ConfigError("a join token is required: set join_token or join_token_file")


async def run(config: AgentConfig, token: str) -> None:
    from agent.link import SchedulerLink
    from agent.runtime.native.cgroups import probe
    from agent.runtime.native.images import ImageStore
    from agent.runtime.native.runtime import NativeRuntime
    from agent.supervisor import Supervisor

    state = Path(config.state_dir)
    cgroups = await asyncio.to_thread(probe, config.cgroup_parent)
    images = ImageStore(state / "images")
    runtime = NativeRuntime(
        state,
        images,
        cgroups,
        log_dir=Path(config.log_dir) if config.log_dir else state / "logs",
        log_max_bytes=config.log_max_bytes,
        log_max_files=config.log_max_files,
        pids_limit=config.pids_limit,
        allowed_host_paths=config.allowed_host_paths,
    )
    await runtime.start()
    link: SchedulerLink | None = None
    supervisor = Supervisor(runtime, state, lambda uid: link.report(uid) if link else None)
    link = SchedulerLink(config, supervisor, token)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await supervisor.recover()
        link_task = asyncio.create_task(link.run(), name="scheduler-link")
        _LOGGER.info("corral-agent %s running (cgroup v%d)", config.node_name, cgroups.version)
        await stop.wait()
        _LOGGER.info("shutting down; pods keep running")
        link_task.cancel()
        await asyncio.gather(link_task, return_exceptions=True)
    finally:
        await supervisor.close(stop_pods=config.stop_pods_on_exit)
        await runtime.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["image"]:
        from agent.runtime.native.images import image_main

        return image_main(argv[1:])
    try:
        config = load_config(
            AgentConfig,
            argv,
            prog="corral-agent",
            description="corral's node agent: runs this machine's pods. "
            "`corral-agent image import|ls|rm` manages the local image store.",
            env_prefix=ENV_PREFIX,
        )
        token = read_token(config)
    except ConfigError as exc:
        print(f"corral-agent: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop

        uvloop.run(run(config, token))
    except ImportError:
        asyncio.run(run(config, token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
