"""The eviction subresource, as kube-apiserver serves it (pkg/registry/core/pod/storage/
eviction.go): what `kubectl drain` and cluster tooling POST to take a pod off its node.

    POST /api/v1/namespaces/{namespace}/pods/{name}/eviction
    {"apiVersion": "policy/v1", "kind": "Eviction",       (or policy/v1beta1)
     "metadata": {"name": NAME},
     "deleteOptions": {"gracePeriodSeconds": 30, "preconditions": {...}, "dryRun": ["All"]}}

    201 {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
         "code": 201}

corral has no PodDisruptionBudgets, and without one kube-apiserver's eviction is the
pod's graceful delete: here it is the very delete `DELETE .../pods/{name}` makes
(`pods.delete_pod_object`), so a pod a Deployment or Job owns is replaced by its
controller as after a delete. 404 for a pod that is not there; 409 for a failed
precondition, worded as a DELETE's; 400 for an Eviction that names another pod or
namespace, or is no Eviction, as kube-apiserver answers those. A dry run (the body's
`deleteOptions.dryRun` or the query's `dryRun`, which must agree) checks all of that
and deletes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from common.manifest import causes_from_validation
from common.models import Eviction
from scheduler.api.common import json_response, name_param, namespace_param, plane, read_documents
from scheduler.api.deleting import dry_run, options_from
from scheduler.api.errors import BadRequest
from scheduler.api.options import honours_dry_run
from scheduler.api.pods import delete_pod_object

# The versions kube-apiserver takes an Eviction in (EvictionREST.AcceptsGroupVersion).
API_VERSIONS = ("policy/v1", "policy/v1beta1")
PATH = "/api/v1/namespaces/{namespace}/pods/{name}/eviction"


def _eviction(doc: Any, namespace: str, name: str) -> Eviction:
    """The body as an Eviction of the pod the URL names; 400 saying what is wrong."""
    if not isinstance(doc, dict):
        raise BadRequest(f"expected an Eviction object, got {type(doc).__name__}")
    api_version, kind = doc.get("apiVersion", "policy/v1"), doc.get("kind", "Eviction")
    if api_version not in API_VERSIONS or kind != "Eviction":
        raise BadRequest(
            f"expected a policy/v1 (or policy/v1beta1) Eviction, got {api_version}/{kind}"
        )
    meta = doc.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    if meta.get("name") != name:  # checked first, as kube-apiserver does
        raise BadRequest("name in URL does not match name in Eviction object")
    if meta.get("namespace") not in (None, "", namespace):
        raise BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    try:
        # One model for both versions: they are the same object.
        return Eviction.model_validate({**doc, "apiVersion": "policy/v1", "kind": "Eviction"})
    except ValidationError as exc:
        causes = causes_from_validation(exc)
        problems = "; ".join(f"{c.field}: {c.message}" for c in causes)
        raise BadRequest(f"the Eviction is invalid: {problems}", causes=causes) from None


@honours_dry_run
async def evict_pod(request: web.Request) -> web.Response:
    """Evict a pod (policy/v1 Eviction): its graceful delete, there being no
    PodDisruptionBudgets."""
    namespace, name = namespace_param(request), name_param(request)
    docs = await read_documents(request)
    if len(docs) != 1:
        raise BadRequest(f"expected one Eviction, got {len(docs)} documents")
    eviction = _eviction(docs[0], namespace, name)
    sent = eviction.delete_options.to_dict() if eviction.delete_options else {}
    # Its options are the body's only: a DELETE's query parameters are not an eviction's.
    options = options_from(sent, {}, "deleteOptions.")
    queried = request.query.getall("dryRun", [])
    if queried:
        asked = dry_run(queried, "query parameter dryRun")
        if "dryRun" in sent and sent["dryRun"] and asked != options.dry_run:
            raise BadRequest(
                f"Non-matching dry-run options in request and content: {queried} and "
                f"{sent['dryRun']}"
            )
        options = dataclasses.replace(options, dry_run=asked)
    # kube-apiserver reads the pod before it deletes it, so an eviction never removes one
    # it cannot read (which `DELETE ...?ignoreStoreReadError...` does).
    options = dataclasses.replace(options, ignore_read_error=False)
    await delete_pod_object(plane(request), namespace, name, options)
    # kube-apiserver's create handler sets the code of a Status it answers with.
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    return json_response({**body, "code": 201}, status=201)


ROUTES = [web.post(PATH, evict_pod)]
