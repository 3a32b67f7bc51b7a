"""The status page at `/`: server-rendered HTML for operators, read-only, refreshing itself.

What an on-call person looks at: nodes with CPU and memory (capacity, requested, used)
as bars, Ready/NotReady and cordoned; pods by phase and per namespace; the failing and
pending pods with their reasons; recent events and errors. `/api/v1/status` is the
machine-readable twin. No build step, no script: inline CSS and a meta refresh.

Signing in, for a person with a browser: open `/?token=TOKEN` once (any API token;
`viewer` is enough). The page checks it, sets it as an HttpOnly, SameSite=Strict
cookie and redirects to `/`, so the token leaves the address bar. Only this page reads
the cookie: every other route still needs the Authorization header, so the cookie
cannot be used to change anything (no CSRF). `/` also accepts the header. Without a
valid token the page is a small sign-in form. Everything shown is escaped.
"""

from __future__ import annotations

import heapq
import html
import itertools
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from aiohttp import web

from common.models import POD_PHASES, Event, Pod
from common.quantity import humanize_bytes
from scheduler.api.common import plane
from scheduler.api.ops import behind_on_changes
from scheduler.cluster import ClusterState, NodeState
from scheduler.controlplane import ControlPlane
from scheduler.objects import decode, pod_store_key
from scheduler.overview import NORMAL_WAITING

COOKIE = "corral_token"
REFRESH_SECONDS = 5
MAX_PROBLEMS = 100
# Nodes shown, those needing attention first: a table of thousands is no use to a person,
# and rendering it every refresh held the event loop (0.2-0.3 s and 3 MB at 5,000 nodes).
MAX_NODES = 100
MAX_EVENTS = 30
MAX_ERRORS = 20
RECENT_RESTART_SECONDS = 600  # a running pod that failed this recently is listed

HEADERS = {
    # The page needs nothing but its own inline style; it is never framed or cached, and
    # never sends a Referer (the first URL carried a token).
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.6em 0 .5em}
table{border-collapse:collapse;background:#fff;min-width:40em}
th,td{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#eee}.num{text-align:right}.muted{color:#777}
.badge{display:inline-block;padding:0 .4em;border-radius:.3em;font-size:.85em;margin-right:.3em}
.ok{background:#d4f4d4;color:#174d17}.bad{background:#fbd5d5;color:#7a1212}
.warn{background:#fdf0c4;color:#6b4d00}
.bar{position:relative;width:14em;height:1.1em;background:#e6e6e6;border-radius:.2em}
.bar .req{position:absolute;left:0;top:0;height:60%;background:#6a9fd8}
.bar .used{position:absolute;left:0;bottom:0;height:40%;background:#2e7d32}
.cards span{display:inline-block;margin-right:1.5em}.msg{max-width:50em}
"""


def e(value: object) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def _page(title: str, body: str, *, refresh: bool) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)


def _sign_in(message: str, status: int = 401) -> web.Response:
    body = (
        "<h1>corral</h1>"
        f'<p class="muted">{e(message)}</p>'
        '<form method="get" action="/"><label>API token (a viewer token is enough) '
        '<input type="password" name="token" autocomplete="current-password" required>'
        "</label> <button>Sign in</button></form>"
        '<p class="muted">See <code>corral token create --role viewer</code>; '
        "<code>corral up</code> and the scheduler keep an admin token in "
        "<code>STATE_DIR/admin-token</code>.</p>"
    )
    response = _html(_page("corral: sign in", body, refresh=False), status)
    return response


async def status_page(request: web.Request) -> web.StreamResponse:
    """GET /: the page, the sign-in form, or (with ?token=) the cookie and a redirect."""
    cp = plane(request)
    if "logout" in request.query:
        response = _sign_in("Signed out.", 200)
        response.del_cookie(COOKIE, path="/")
        return response
    if not cp.ready:
        return _html(
            _page("corral", "<h1>corral</h1><p>The control plane is starting.</p>", refresh=True),
            503,
        )
    query_token = request.query.get("token")
    if query_token is not None:
        if await cp.auth.authenticate(f"Bearer {query_token}") is None:
            return _sign_in("That token is not valid (unknown or revoked).")
        response = web.Response(status=303, headers={**HEADERS, "Location": "/"})
        response.set_cookie(
            COOKIE,
            query_token,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,  # only over HTTPS when the API is served over HTTPS
        )
        return response
    header = request.headers.get("Authorization")
    if not header and request.cookies.get(COOKIE):
        header = f"Bearer {request.cookies[COOKIE]}"
    record = await cp.auth.authenticate(header)
    if record is None:
        response = _sign_in("Sign in with an API token to see the cluster.")
        if COOKIE in request.cookies:
            response.del_cookie(COOKIE, path="/")  # revoked since it was set
        return response
    events = _recent_events(cp)
    who = f"token {record.id} ({record.role})"
    return _html(_page("corral status", render(cp, events, who), refresh=True))


# -- rendering ----------------------------------------------------------------------------------


def render(cp: ControlPlane, events: list[Event], who: str) -> str:
    # What is kept as the cluster changes (scheduler/overview.py, the cluster view's sums),
    # and the pods that may be failing: no walk over every node, pod or event.
    cluster, overview = cp.cluster, cp.overview
    ready, cordoned = cluster.totals.ready, cluster.totals.cordoned
    not_ready = len(cluster.nodes) - ready
    may_fail = [cluster.pods[k] for k in overview.may_fail if k in cluster.pods]
    behind = len(behind_on_changes(cluster, time.monotonic()))
    cards = [
        f"<span><b>Nodes</b> {ready}/{len(cluster.nodes)} ready"
        + (f' <span class="badge bad">{not_ready} NotReady</span>' if not_ready else "")
        + (f' <span class="badge warn">{cordoned} cordoned</span>' if cordoned else "")
        + (f' <span class="badge bad">{behind} behind on pod changes</span>' if behind else "")
        + "</span>",
        f"<span><b>Pods</b> {len(cluster.pods)}: "
        + ", ".join(f"{cluster.phases.get(p, 0)} {p}" for p in POD_PHASES)
        + "</span>",
        f"<span><b>Waiting for a node</b> {len(cluster.pending)}</span>",
        f'<span class="muted">revision {cp.store.revision} · '
        f"{datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z} · "
        f"refreshes every {REFRESH_SECONDS}s</span>",
    ]
    return "".join(
        [
            "<h1>corral</h1>",
            f'<div class="cards">{"".join(cards)}</div>',
            "<h2>Nodes</h2>",
            '<p class="muted">Bars: <span class="badge" style="background:#6a9fd8">&nbsp;</span>'
            "requested of allocatable, "
            '<span class="badge" style="background:#2e7d32">&nbsp;</span>used of capacity.</p>',
            _nodes(nodes_shown(cluster), len(cluster.nodes)),
            "<h2>Pods by namespace</h2>",
            _namespaces(overview.by_namespace),
            "<h2>Failing and pending pods</h2>",
            _problems(may_fail, cp.scheduler.unschedulable),
            "<h2>Recent events</h2>",
            _events(events),
            "<h2>Recent errors</h2>",
            _errors(cp.errors.to_list()[-MAX_ERRORS:]),
            f'<p class="muted">Read-only. Signed in with {e(who)} · '
            '<a href="/?logout=1">sign out</a> · machine-readable: '
            '<a href="/api/v1/status">/api/v1/status</a> (Authorization header).</p>',
        ]
    )


def _table(headers: Iterable[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{e(empty)}</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _pct(part: int, whole: int) -> float:
    return 0.0 if whole <= 0 else max(0.0, min(100.0, 100.0 * part / whole))


def _bar(requested: int, allocatable: int, used: int, capacity: int, fmt: str) -> str:
    def show(value: int) -> str:
        return (
            f"{value / 1000:.2f}".rstrip("0").rstrip(".") if fmt == "cpu" else humanize_bytes(value)
        )

    title = (
        f"requested {show(requested)} of {show(allocatable)} allocatable; "
        f"used {show(used)} of {show(capacity)} capacity"
    )
    return (
        f'<div class="bar" title="{e(title)}">'
        f'<div class="req" style="width:{_pct(requested, allocatable):.1f}%"></div>'
        f'<div class="used" style="width:{_pct(used, capacity):.1f}%"></div></div>'
        f'<div class="muted">req {e(show(requested))}/{e(show(allocatable))} · '
        f"used {e(show(used))}/{e(show(capacity))}"
        f"{' cores' if fmt == 'cpu' else ''}</div>"
    )


def nodes_shown(cluster: ClusterState) -> list[NodeState]:
    """Up to MAX_NODES nodes: those NotReady, disconnected or cordoned, then the others,
    each by name; from the cluster view's indexes, not a walk over every node."""
    picked = heapq.nsmallest(MAX_NODES, cluster.attention)
    if len(picked) < MAX_NODES:
        others = (name for name in cluster.names if name not in cluster.attention)
        picked += itertools.islice(others, MAX_NODES - len(picked))
    return [cluster.nodes[name] for name in picked]


def _nodes(shown: list[NodeState], total: int) -> str:
    """The table of the nodes `shown`, of `total`."""
    mono = time.monotonic()
    rows = []
    for state in shown:
        badges = (
            '<span class="badge ok">Ready</span>'
            if state.ready
            else '<span class="badge bad">NotReady</span>'
        )
        if state.node.spec.unschedulable:
            badges += '<span class="badge warn">cordoned</span>'
        if not state.connected:
            badges += '<span class="badge warn">disconnected</span>'
        cpu = _bar(state.req_cpu, state.alloc_cpu, state.usage_cpu, state.cap_cpu, "cpu")
        mem = _bar(state.req_mem, state.alloc_mem, state.usage_mem, state.cap_mem, "memory")
        rows.append(
            f"<tr><td>{e(state.name)}</td><td>{badges}</td><td>{cpu}</td><td>{mem}</td>"
            f'<td class="num">{len(state.pods)}/{state.alloc_pods}</td>'
            f'<td class="num">{mono - state.last_heartbeat:.1f}s ago</td></tr>'
        )
    more = total - len(shown)
    table = _table(
        ("Node", "Status", "CPU", "Memory", "Pods", "Heartbeat"),
        rows,
        "No nodes yet: start corral-agent on a machine (see README).",
    )
    if more > 0:
        table += (
            f'<p class="muted">{len(shown)} of {total} nodes shown, those NotReady, '
            "disconnected or cordoned first; <code>corral get nodes</code> lists them all.</p>"
        )
    return table


def _namespaces(counts: Mapping[tuple[str, str], int]) -> str:
    """A row per namespace from the pods' counts by (namespace, phase)."""
    namespaces = sorted({ns for ns, _ in counts})
    rows = [
        f"<tr><td>{e(ns)}</td>"
        + "".join(f'<td class="num">{counts.get((ns, p), 0)}</td>' for p in POD_PHASES)
        + f'<td class="num">{sum(counts.get((ns, p), 0) for p in POD_PHASES)}</td></tr>'
        for ns in namespaces
    ]
    return _table(("Namespace", *POD_PHASES, "Total"), rows, "No pods.")


def problem(
    pod: Pod, unschedulable: dict[str, str], now: datetime | None = None
) -> tuple[int, str, str] | None:
    """(severity, reason, message) when the pod is failing or waiting; None when fine.

    Severity orders the table: 0 failed, 1 failing containers, 2 pending."""
    now = now or datetime.now(UTC)
    status = pod.status
    if status.phase == "Failed":
        for cs in status.container_statuses:
            term = cs.state.terminated
            if term is not None and term.exit_code != 0:
                message = term.message or f"container {cs.name} exited {term.exit_code}"
                return 0, status.reason or term.reason or "Error", message
        return 0, status.reason or "Failed", status.message or ""
    if status.phase == "Unknown":
        return 1, status.reason or "Unknown", status.message or "the node does not report"
    for cs in status.container_statuses:
        waiting = cs.state.waiting
        if waiting is not None and waiting.reason not in NORMAL_WAITING:
            last = cs.last_state.terminated
            detail = f" (last exit {last.exit_code}, {last.reason})" if last else ""
            message = (waiting.message or f"container {cs.name}") + detail
            return 1, waiting.reason or "Waiting", message
        term = cs.state.terminated
        if status.phase == "Running" and term is not None and term.exit_code != 0:
            return 1, term.reason or "Error", f"container {cs.name} exited {term.exit_code}"
        last = cs.last_state.terminated
        if cs.restart_count and last is not None and last.exit_code != 0:
            ago = (now - last.finished_at).total_seconds() if last.finished_at else 0.0
            if ago < RECENT_RESTART_SECONDS:  # crash-looping, not one restart last week
                message = (
                    f"container {cs.name} restarted {cs.restart_count} times; last exit "
                    f"{last.exit_code} ({last.reason or 'Error'}) {ago:.0f}s ago"
                )
                return 1, last.reason or "Error", message
    if status.phase == "Pending":
        scheduled = next((c for c in status.conditions if c.type == "PodScheduled"), None)
        if scheduled is not None and scheduled.status == "False":
            return 2, scheduled.reason or "Unschedulable", scheduled.message or ""
        waiting_for = unschedulable.get(pod_store_key(pod))
        if waiting_for is not None:
            return 2, "Unschedulable", waiting_for
        if pod.spec.node_name is None:
            return 2, "Pending", "waiting for a node"
    return None


def _problems(pods: list[Pod], unschedulable: dict[str, str]) -> str:
    """The failing and pending pods of `pods` (those `may_be_failing`), the most severe
    first, cut at MAX_PROBLEMS."""
    found = []
    now = datetime.now(UTC)
    for pod in pods:
        why = problem(pod, unschedulable, now)
        if why is not None:
            found.append((why, pod))
    found.sort(
        key=lambda item: (item[0][0], item[1].metadata.namespace or "", item[1].metadata.name)
    )
    rows = []
    for (severity, reason, message), pod in found[:MAX_PROBLEMS]:
        restarts = sum(cs.restart_count for cs in pod.status.container_statuses)
        badge = "bad" if severity < 2 else "warn"
        rows.append(
            f"<tr><td>{e(pod.metadata.namespace or 'default')}/{e(pod.metadata.name)}</td>"
            f"<td>{e(pod.status.phase)}</td><td>{e(pod.spec.node_name or '')}</td>"
            f'<td class="num">{restarts}</td>'
            f'<td><span class="badge {badge}">{e(reason)}</span></td>'
            f'<td class="msg">{e(message)}</td></tr>'
        )
    more = len(found) - MAX_PROBLEMS
    table = _table(
        ("Pod", "Phase", "Node", "Restarts", "Reason", "Message"),
        rows,
        "None: every pod is running, or finished well.",
    )
    return table + (f'<p class="muted">and {more} more</p>' if more > 0 else "")


def _recent_events(cp: ControlPlane) -> list[Event]:
    """The events written last (only those are decoded)."""
    return [decode(kv, Event) for kv in cp.overview.newest_events(MAX_EVENTS)]


def _events(events: list[Event]) -> str:
    rows = []
    for ev in events:
        when = ev.last_timestamp or ev.first_timestamp
        obj = ev.involved_object
        where = f"{obj.kind.lower()}/{obj.name}"
        if obj.kind != "Node":
            where = f"{obj.namespace or 'default'}/{where}"
        kind = '<span class="badge warn">Warning</span>' if ev.type == "Warning" else "Normal"
        rows.append(
            f"<tr><td>{e(f'{when:%H:%M:%S}' if when else '')}</td><td>{kind}</td>"
            f"<td>{e(where)}</td><td>{e(ev.reason)}</td>"
            f'<td class="num">{ev.count}</td><td class="msg">{e(ev.message)}</td></tr>'
        )
    return _table(("Time (UTC)", "Type", "Object", "Reason", "Count", "Message"), rows, "None.")


def _errors(errors: list[dict[str, str]]) -> str:
    rows = [
        f'<tr><td>{e(item["time"])}</td><td class="msg">{e(item["message"])}</td></tr>'
        for item in reversed(errors)
    ]
    return _table(("Time", "Error"), rows, "None.")


ROUTES = [web.get("/", status_page)]
