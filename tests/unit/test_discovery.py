"""Discovery reads the router: a route added to an application is discovered as it is."""

from __future__ import annotations

from aiohttp import web

from scheduler.api import discovery
from scheduler.api.watch import watchable


async def _handler(request: web.Request) -> web.Response:
    return web.Response()


@watchable
async def _watchable_list(request: web.Request) -> web.Response:
    return web.Response()


def _make_app(*routes: web.RouteDef) -> web.Application:
    """An application with the discovery routes and `routes`, nothing else."""
    app = web.Application()
    app.router.add_routes(discovery.ROUTES)
    app.router.add_routes(routes)
    return app


def _verbs(app: web.Application) -> dict[tuple[str, str], tuple[bool, list[str]]]:
    return {
        (gv, r.name): (r.namespaced, sorted(r.verbs))
        for gv, found in discovery.resources(app).items()
        for r in found
    }


def test_a_new_route_is_a_resource() -> None:
    """Routes of a group nothing knows about make a resource, its verbs from the methods."""
    root = "/apis/example.corral.dev/v1alpha1"
    app = _make_app(
        web.get(f"{root}/widgets", _handler),
        web.get(f"{root}/namespaces/{{namespace}}/widgets", _watchable_list),
        web.post(f"{root}/namespaces/{{namespace}}/widgets", _handler),
        web.get(f"{root}/namespaces/{{namespace}}/widgets/{{name}}", _handler),
        web.delete(f"{root}/namespaces/{{namespace}}/widgets/{{name}}", _handler),
        web.put(f"{root}/namespaces/{{namespace}}/widgets/{{name}}/status", _handler),
    )
    assert _verbs(app) == {
        ("example.corral.dev/v1alpha1", "widgets"): (
            True,
            ["create", "delete", "get", "list", "watch"],
        ),
        ("example.corral.dev/v1alpha1", "widgets/status"): (True, ["update"]),
    }
    widget = discovery._resource_doc(discovery.resources(app)["example.corral.dev/v1alpha1"][0])
    assert widget["kind"] == "Widget" and widget["singularName"] == "widget"


def test_only_resource_layouts_are_read() -> None:
    """Discovery's own routes (with or without a trailing slash), non-resources and deeper
    paths are not resources; a cluster-scoped collection is not namespaced; an unmarked
    list has no watch."""
    app = _make_app(
        web.get("/api/v1/status", _handler),
        web.get("/api/v1/things", _handler),
        web.patch("/api/v1/things/{name}", _handler),
        web.get("/api/v1/things/{name}/a/b", _handler),
        web.get("/healthz", _handler),
    )
    assert _verbs(app) == {("v1", "things"): (False, ["list", "patch"])}
