"""JSON merge patch (RFC 7386) and corral's subset of Kubernetes' strategic merge patch."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from scheduler.mergepatch import PatchError, merge_patch, strategic_merge_patch


def _pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80}],
                },
                {"name": "side", "image": "busybox"},
            ],
            "tolerations": [{"key": "a"}],
        },
    }


# RFC 7386, appendix A: (target, patch, result).
RFC7386_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC7386_EXAMPLES)
def test_merge_patch_rfc7386_examples(target: Any, patch: Any, result: Any) -> None:
    """Every example of RFC 7386's appendix gives the RFC's result."""
    assert merge_patch(target, patch) == result


def test_merge_patch_leaves_its_inputs_alone() -> None:
    """Neither the target nor the patch is changed, and the result shares no patch value."""
    target = _pod()
    patch: dict[str, Any] = {"metadata": {"labels": {"app": None, "x": "y"}}, "spec": {"a": [1]}}
    before_target, before_patch = copy.deepcopy(target), copy.deepcopy(patch)
    result = merge_patch(target, patch)
    assert (target, patch) == (before_target, before_patch)
    assert result["metadata"]["labels"] == {"tier": "fe", "x": "y"}
    result["spec"]["a"].append(2)
    assert patch["spec"]["a"] == [1]


def test_merge_patch_replaces_lists_whole() -> None:
    """A merge patch knows no merge keys: `containers` is replaced."""
    result = merge_patch(_pod(), {"spec": {"containers": [{"name": "main", "image": "x"}]}})
    assert result["spec"]["containers"] == [{"name": "main", "image": "x"}]


def test_strategic_maps_merge_and_null_deletes() -> None:
    """kubectl label / annotate: maps merge, `null` removes a key."""
    result = strategic_merge_patch(
        _pod(), {"metadata": {"labels": {"tier": None, "k": "v"}, "annotations": {"a": "1"}}}
    )
    assert result["metadata"] == {
        "name": "web",
        "labels": {"app": "web", "k": "v"},
        "annotations": {"a": "1"},
    }


def test_strategic_merges_lists_by_key() -> None:
    """containers by name, env by name, ports by containerPort; new items appended."""
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "busybox:2",
                    "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                    "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}],
                },
                {"name": "new", "image": "x"},
            ]
        }
    }
    containers = strategic_merge_patch(_pod(), patch)["spec"]["containers"]
    assert [c["name"] for c in containers] == ["main", "side", "new"]
    main = containers[0]
    assert main["image"] == "busybox:2"
    assert main["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
        {"name": "C", "value": "4"},
    ]
    assert main["ports"] == [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]
    assert containers[1] == {"name": "side", "image": "busybox"}


def test_strategic_replaces_lists_without_a_merge_key() -> None:
    """Lists Kubernetes does not merge (tolerations, command) are replaced, as by a merge
    patch."""
    result = strategic_merge_patch(_pod(), {"spec": {"tolerations": [{"key": "b"}]}})
    assert result["spec"]["tolerations"] == [{"key": "b"}]


def test_strategic_conditions_and_owner_references() -> None:
    """conditions merge by type, ownerReferences by uid."""
    original = {
        "metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},
    }
    patch = {
        "metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X"}]},
    }
    result = strategic_merge_patch(original, patch)
    assert [r["uid"] for r in result["metadata"]["ownerReferences"]] == ["1", "2"]
    assert result["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "X"},
    ]


def test_strategic_patch_directives() -> None:
    """`$patch: delete` removes an item by key or empties a map; `$patch: replace` replaces
    a list or a map."""
    pod = _pod()
    deleted = strategic_merge_patch(
        pod, {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}
    )
    assert [c["name"] for c in deleted["spec"]["containers"]] == ["main"]
    replaced = strategic_merge_patch(
        pod, {"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}}
    )
    assert replaced["spec"]["containers"] == [{"name": "only", "image": "x"}]
    labels = strategic_merge_patch(pod, {"metadata": {"labels": {"$patch": "replace", "k": "v"}}})
    assert labels["metadata"]["labels"] == {"k": "v"}
    emptied = strategic_merge_patch(pod, {"metadata": {"labels": {"$patch": "delete"}}})
    assert emptied["metadata"]["labels"] == {}


def test_strategic_set_element_order_retain_keys_and_primitive_deletes() -> None:
    """`$setElementOrder/`, `$retainKeys` and `$deleteFromPrimitiveList/`, as kubectl
    sends them."""
    pod = _pod()
    ordered = strategic_merge_patch(
        pod,
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "side"}, {"name": "main"}],
                "containers": [{"name": "main", "image": "y"}],
            }
        },
    )
    assert [c["name"] for c in ordered["spec"]["containers"]] == ["side", "main"]
    assert ordered["spec"]["containers"][1]["image"] == "y"
    strategy = {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}
    retained = strategic_merge_patch(
        strategy, {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}
    )
    assert retained == {"strategy": {"type": "Recreate"}}
    trimmed = strategic_merge_patch(
        {"finalizers": ["a", "b", "c"]}, {"$deleteFromPrimitiveList/finalizers": ["b"]}
    )
    assert trimmed == {"finalizers": ["a", "c"]}


def test_finalizers_merge_as_a_set_of_values() -> None:
    """`finalizers` is patchStrategy merge: a strategic patch adds its values, each once;
    `$patch: replace` and a merge patch replace the list."""
    held = {"metadata": {"finalizers": ["a", "b"]}}
    added = strategic_merge_patch(held, {"metadata": {"finalizers": ["c", "a", "c"]}})
    assert added == {"metadata": {"finalizers": ["a", "b", "c"]}}
    replaced = strategic_merge_patch(
        held, {"metadata": {"finalizers": [{"$patch": "replace"}, "c"]}}
    )
    assert replaced == {"metadata": {"finalizers": ["c"]}}
    assert merge_patch(held, {"metadata": {"finalizers": ["c"]}}) == {
        "metadata": {"finalizers": ["c"]}
    }
    odd = strategic_merge_patch(held, {"metadata": {"finalizers": [{"x": 1}]}})
    assert odd == {"metadata": {"finalizers": ["a", "b", {"x": 1}]}}  # the model refuses it
    namespace = {"spec": {"finalizers": ["kubernetes"]}}  # atomic in Kubernetes
    assert strategic_merge_patch(namespace, {"spec": {"finalizers": ["x"]}}) == {
        "spec": {"finalizers": ["x"]}
    }


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ({"spec": {"$unknown": 1}}, "spec.$unknown"),
        ({"metadata": {"labels": {"$patch": "merge"}}}, "'merge'"),
        ({"spec": {"containers": [{"$patch": "frobnicate", "name": "x"}]}}, "'frobnicate'"),
        ({"spec": {"containers": [{"image": "x"}]}}, "merge key 'name'"),
        ({"spec": {"containers": [{"$patch": "delete"}]}}, "merge key 'name'"),
        ({"spec": {"$setElementOrder/tolerations": []}}, "not a list merged by key"),
        ({"spec": {"$retainKeys": "type"}}, "spec.$retainKeys"),
        ({"spec": {"$retainKeys": ["a"], "b": 1}}, "not in $retainKeys"),
        (["not", "a", "map"], "JSON object"),
    ],
)
def test_strategic_refuses_what_it_cannot_apply(patch: Any, named: str) -> None:
    """A directive corral does not support, or an item without its merge key, is refused
    by name, never ignored."""
    with pytest.raises(PatchError, match=re.escape(named)):
        strategic_merge_patch(_pod(), patch)


def test_strategic_leaves_its_inputs_alone() -> None:
    """Neither the original nor the patch is changed."""
    pod = _pod()
    patch = {"spec": {"containers": [{"name": "main", "env": [{"name": "A", "value": "9"}]}]}}
    before_pod, before_patch = copy.deepcopy(pod), copy.deepcopy(patch)
    strategic_merge_patch(pod, patch)
    assert (pod, patch) == (before_pod, before_patch)
