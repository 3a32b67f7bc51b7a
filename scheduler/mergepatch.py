"""JSON merge patch (RFC 7386) and the subset of Kubernetes' strategic merge patch that
corral's objects need: pure functions on decoded JSON, no I/O (the API's PATCH uses them).

A strategic merge patch is a merge patch that knows some lists: where Kubernetes merges
a list by a key (`containers` by `name`, `conditions` by `type`...), the patch's items
are merged into the items with the same key and new ones appended, instead of the list
being replaced. The directives handled are those Kubernetes' clients send:

    $patch: replace | delete            in a map: replace it / make it empty
    {"$patch": "replace"}               as a list item: the list is the patch's other items
    {"$patch": "delete", KEY: VALUE}    as a list item: remove the item with that key
    $setElementOrder/FIELD: [...]       the order of a merged list's items
    $retainKeys: [...]                  the map keeps only these keys
    $deleteFromPrimitiveList/FIELD: []  remove these values from a list of scalars

Any other `$` key is refused (PatchError), never ignored.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Hashable
from typing import Any

# The lists Kubernetes merges by key (the `patchMergeKey` of their fields), for the fields
# corral's kinds have or refuse by name; by field name, which in these kinds is unambiguous.
# Every other list is replaced whole, as in Kubernetes.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "volumes": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "addresses": "type",
    "topologySpreadConstraints": "topologyKey",
}

# The lists of scalars Kubernetes merges (`patchStrategy: merge` without a key), by path
# from the object's root: the patch's values are added to the object's, each once, in
# order. (A Namespace's `spec.finalizers` is atomic in Kubernetes: replaced.)
MERGED_VALUES = frozenset({"metadata.finalizers"})

_DIRECTIVE = "$patch"
_ORDER = "$setElementOrder/"
_RETAIN = "$retainKeys"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


class PatchError(ValueError):
    """A patch that cannot be applied as sent: the message names what and where."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: `patch` merged into `target` (neither is changed): maps merge, `null`
    removes a key, anything else (lists included) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(original: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge patch (the subset in the module docstring) of `patch`
    into `original` (neither is changed); PatchError for what it cannot apply."""
    if not isinstance(patch, dict):
        raise PatchError(f"a strategic merge patch must be a JSON object, got {json_type(patch)}")
    return _merge_map(original if isinstance(original, dict) else {}, patch, "")


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names: dict[type, str] = {dict: "object", list: "array", str: "string"}
    return names.get(type(value), type(value).__name__)


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _where(path: str) -> str:
    return path or "the patch's top level"


def _merge_map(original: dict[str, Any], patch: dict[str, Any], path: str) -> dict[str, Any]:
    directive = patch.get(_DIRECTIVE)
    if directive is not None:
        if directive == "replace":
            # The map becomes the patch's other keys (their own directives applied).
            return _merge_map({}, {k: v for k, v in patch.items() if k != _DIRECTIVE}, path)
        if directive == "delete":
            return {}  # as Kubernetes: the map is emptied, its key kept
        raise PatchError(
            f"{_where(path)}: unsupported $patch directive {directive!r} in a map "
            "(supported: replace, delete)"
        )
    result = dict(original)
    orders: dict[str, Any] = {}
    removals: dict[str, Any] = {}
    retain: list[str] | None = None
    for key, value in patch.items():
        if key == _RETAIN:
            if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
                raise PatchError(f"{_at(path, key)}: must be a list of field names")
            retain = value
            continue
        if key.startswith(_ORDER):
            orders[key.removeprefix(_ORDER)] = value
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            removals[key.removeprefix(_DELETE_PRIMITIVE)] = value
            continue
        if key.startswith("$"):
            raise PatchError(f"{_at(path, key)}: unsupported strategic merge patch directive")
        field = _at(path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            old = result.get(key)
            result[key] = _merge_map(old if isinstance(old, dict) else {}, value, field)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, key, field)
        else:
            result[key] = value
    for key, values in removals.items():
        result[key] = _remove_values(result.get(key), values, _at(path, _DELETE_PRIMITIVE + key))
    for key, order in orders.items():
        result[key] = _reorder(result.get(key), order, key, _at(path, _ORDER + key))
    if retain is not None:
        extra = [k for k in patch if not k.startswith("$") and k not in retain]
        if extra:
            raise PatchError(
                f"{_at(path, _RETAIN)}: the patch sets {', '.join(extra)}, not in $retainKeys"
            )
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(original: Any, patch: list[Any], key: str, path: str) -> list[Any]:
    """A list of the patch merged into the original one: by key, or replaced."""
    merge_key = MERGE_KEYS.get(key)
    replace = False
    items: list[Any] = []
    deletes: list[Any] = []
    for i, item in enumerate(patch):
        if not isinstance(item, dict) or _DIRECTIVE not in item:
            items.append(item)
            continue
        directive = item[_DIRECTIVE]
        if directive == "replace":
            replace = True
        elif directive == "delete" and merge_key is not None:
            if merge_key not in item:
                raise PatchError(
                    f"{path}[{i}]: $patch: delete needs the merge key {merge_key!r} of the item"
                )
            deletes.append(item[merge_key])
        else:
            supported = "replace, delete" if merge_key else "replace"
            raise PatchError(
                f"{path}[{i}]: unsupported $patch directive {directive!r} in a list "
                f"(supported here: {supported})"
            )
    if not replace and path in MERGED_VALUES and isinstance(original, list):
        merged, seen = list(original), {_identity(v) for v in original}
        for value in items:
            if _identity(value) not in seen:
                seen.add(_identity(value))
                merged.append(value)
        return merged
    if replace or merge_key is None or not isinstance(original, list):
        # Replaced whole (its maps' own directives applied); with `$patch: delete` items
        # on a list the object does not have, there is nothing to delete.
        return [
            _merge_map({}, item, f"{path}[{i}]") if isinstance(item, dict) else item
            for i, item in enumerate(items)
        ]
    deleted = {_identity(value) for value in deletes}
    result = [
        x
        for x in original
        if not (isinstance(x, dict) and merge_key in x and _identity(x[merge_key]) in deleted)
    ]
    # Where each merge-key value is in `result`: one lookup an item, not a scan (a patch of
    # thousands of items would otherwise be quadratic, on the event loop).
    at = {
        _identity(x[merge_key]): j
        for j, x in reversed(list(enumerate(result)))
        if isinstance(x, dict) and merge_key in x
    }
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise PatchError(f"{where}: expected an object with the merge key {merge_key!r}")
        if merge_key not in item:
            raise PatchError(f"{where}: does not contain the merge key {merge_key!r}")
        j = at.get(_identity(item[merge_key]))
        if j is not None:
            result[j] = _merge_map(result[j], item, where)
        else:
            at[_identity(item[merge_key])] = len(result)
            result.append(_merge_map({}, item, where))
    return result


def _identity(value: Any) -> Hashable:
    """A JSON value as a dict key: equal JSON, equal key (`1` and `true` differ, as in
    JSON; maps and lists by their canonical text)."""
    if isinstance(value, dict | list):
        return ("json", json.dumps(value, sort_keys=True))
    return (type(value).__name__, value)


def _remove_values(original: Any, values: Any, path: str) -> Any:
    if not isinstance(values, list):
        raise PatchError(f"{path}: must be a list")
    if not isinstance(original, list):
        return original
    removed = {_identity(v) for v in values}
    return [x for x in original if _identity(x) not in removed]


def _reorder(merged: Any, order: Any, key: str, path: str) -> Any:
    """`$setElementOrder`: the items named, in that order, then any others as they were."""
    merge_key = MERGE_KEYS.get(key)
    if merge_key is None:
        raise PatchError(f"{path}: {key} is not a list merged by key")
    if not isinstance(order, list) or not all(
        isinstance(x, dict) and merge_key in x for x in order
    ):
        raise PatchError(f"{path}: must be a list of objects with the merge key {merge_key!r}")
    if not isinstance(merged, list):
        return merged
    wanted = [x[merge_key] for x in order]
    rank = {value: i for i, value in enumerate(wanted) if isinstance(value, str | int)}

    def ranked(item: Any) -> bool:
        value = item.get(merge_key) if isinstance(item, dict) else None
        return isinstance(value, str | int) and value in rank

    named = sorted((x for x in merged if ranked(x)), key=lambda x: rank[x[merge_key]])
    return named + [x for x in merged if not ranked(x)]
