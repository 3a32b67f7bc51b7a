"""The scheduler as a systemd service: READY once the API serves, STATUS= lines, watchdog.

The watchdog pings come from the event loop and only while the control plane is
healthy: a control loop that died (`ControlPlane.ready` turns False) stops them, and
systemd restarts the scheduler, which heals by reconciling from the store.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from common.sdnotify import Notifier, keep_alive
from scheduler.controlplane import ControlPlane


def status_line(cp: ControlPlane) -> str:
    """One line for `systemctl status`: nodes, pods, the queue."""
    if not cp.ready:
        return "control plane not ready; see the log"
    nodes = cp.cluster.nodes
    ready = sum(1 for n in nodes.values() if n.ready)
    running = sum(1 for p in cp.cluster.pods.values() if p.status.phase == "Running")
    return (
        f"{ready}/{len(nodes)} nodes ready, {running} of {len(cp.cluster.pods)} pods running, "
        f"{len(cp.cluster.pending)} waiting for a node"
    )


def announce(notifier: Notifier, cp: ControlPlane, site: web.TCPSite) -> asyncio.Task[None]:
    """Tell systemd the API serves (on `site`, started); the returned task keeps STATUS
    and the watchdog going until cancelled."""
    scheme = site.name.partition("://")[0]
    urls = [
        "{}://{}:{}".format(scheme, *sock.getsockname()[:2])
        for sock in getattr(site._server, "sockets", None) or []  # the real port if 0 was asked
    ]
    notifier.notify("READY=1", f"STATUS=serving on {', '.join(urls)}; {status_line(cp)}")
    return asyncio.create_task(
        keep_alive(notifier, lambda: status_line(cp), lambda: cp.ready), name="sd-keepalive"
    )
