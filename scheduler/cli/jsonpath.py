"""`--sort-by`: the part of kubectl's JSONPath that names one field, and kubectl's order.

A field is written as kubectl takes it: `{.metadata.name}`, `.metadata.name` or
`metadata.name`, with list indexes (`.status.containerStatuses[0].restartCount`).
Objects are ordered as kubectl's sorter orders them: numbers by value, strings
that are all quantities (`250m`, `1Gi`) by amount, other strings naturally
(`web-9` before `web-10`); objects without the field come first. The sort is
stable, so objects with equal values keep the order they came in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from common.quantity import QuantityError, parse_quantity
from scheduler.cli.errors import CommandError

Object = dict[str, Any]
Step = str | int  # a key of a mapping, or an index of a list

_RELAXED = re.compile(r"^\{\.?([^{}]+)\}$|^\.?([^{}]+)$")
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_DIGITS = re.compile(r"(\d+)")


def parse(expression: str) -> tuple[Step, ...]:
    """`{.status.containerStatuses[0].restartCount}` -> ("status", "containerStatuses", 0, ...)."""
    match = _RELAXED.match(expression.strip())
    if match is None:
        raise CommandError(
            f"--sort-by={expression}: expected a field path such as {{.metadata.name}}, "
            ".metadata.name or metadata.name"
        )
    path = match.group(1) or match.group(2)
    steps: list[Step] = []
    position = 0
    for found in _STEP.finditer(path):
        between = path[position : found.start()]
        if between not in ("", "."):
            break
        key, index = found.groups()
        steps.append(int(index) if index is not None else key)
        position = found.end()
    if not steps or position != len(path):
        raise CommandError(
            f"--sort-by={expression}: only a plain field path is supported "
            "(names and [N] indexes, such as {.status.containerStatuses[0].restartCount})"
        )
    return tuple(steps)


def value_at(obj: object, steps: Sequence[Step]) -> object:
    """The value `steps` lead to in `obj`; None when any step is missing."""
    for step in steps:
        if isinstance(step, int):
            if not isinstance(obj, list) or step >= len(obj):
                return None
            obj = obj[step]
        elif isinstance(obj, dict):
            obj = obj.get(step)
        else:
            return None
    return obj


def sort_objects(objects: Sequence[Object], expression: str) -> list[Object]:
    """`objects` in the order of the field `expression` names, as `kubectl get --sort-by`."""
    steps = parse(expression)
    values = [value_at(o, steps) for o in objects]
    # As kubectl: a path found in no object is a mistake (worth saying once there is an
    # order to get wrong); a path missing from some objects puts those first.
    if len(objects) > 1 and all(v is None for v in values):
        shown = "{." + ".".join(str(s) for s in steps) + "}"
        raise CommandError(f'couldn\'t find any field with path "{shown}" in the list of objects')
    quantities = all(_quantity(v) is not None for v in values if isinstance(v, str))
    order = sorted(range(len(objects)), key=lambda i: _key(values[i], quantities))
    return [objects[i] for i in order]


def _quantity(value: str) -> Fraction | None:
    try:
        return parse_quantity(value)
    except QuantityError:
        return None


def _key(value: object, quantities: bool) -> tuple[Any, ...]:
    """Missing first; then numbers, then strings; values of one kind compare among themselves."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        if quantities:
            return (1, _quantity(value))
        # Natural order: runs of digits compare as numbers (`web-9` < `web-10`).
        parts = _DIGITS.split(value)
        return (2, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts))
    return (3, str(value))  # lists and mappings: an order, if not a meaningful one
