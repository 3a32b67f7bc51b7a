"""Kubernetes label selectors: `app=web,tier!=db,env in (a,b),env notin (c),gpu,!legacy`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from common.models import check_label_key, check_label_value

_SET_EXPR = re.compile(r"^\s*(!?)\s*([^\s!=,()]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_EXPR = re.compile(r"^\s*([^\s!=,()]+)\s*(==|=|!=)\s*([^\s!=,()]*)\s*$")
_EXISTS_EXPR = re.compile(r"^\s*(!?)\s*([^\s!=,()]+)\s*$")


class SelectorError(ValueError):
    """A selector string that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "in":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # notin: absent keys match, as in k8s


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def _checked(key: str, values: list[str], expr: str) -> tuple[str, frozenset[str]]:
    try:
        check_label_key(key)
        for value in values:
            check_label_value(value)
    except ValueError as exc:
        raise SelectorError(f"in {expr.strip()!r}: {exc}") from None
    return key, frozenset(values)


def parse_selector(text: str | None) -> list[Requirement]:
    """Parse a label selector; an empty or missing selector matches everything."""
    if not text or not text.strip():
        return []
    requirements = []
    for expr in _split_top_level(text):
        if m := _SET_EXPR.match(expr):
            if m[1]:
                raise SelectorError(f"{expr.strip()!r}: '!' cannot be combined with {m[3]}")
            values = [v.strip() for v in m[4].split(",") if v.strip()]
            if not values:  # as Kubernetes: `in ()` would match nothing, `notin ()` all
                raise SelectorError(f"{expr.strip()!r}: the values of {m[3]} cannot be empty")
            key, vals = _checked(m[2], values, expr)
            requirements.append(Requirement(key, m[3], vals))
        elif m := _EQ_EXPR.match(expr):
            key, vals = _checked(m[1], [m[3]], expr)
            requirements.append(Requirement(key, "notin" if m[2] == "!=" else "in", vals))
        elif m := _EXISTS_EXPR.match(expr):
            key, _ = _checked(m[2], [], expr)
            requirements.append(Requirement(key, "!exists" if m[1] else "exists"))
        else:
            raise SelectorError(f"{expr.strip()!r} is not a selector requirement")
    return requirements


def matches(requirements: list[Requirement], labels: Mapping[str, str]) -> bool:
    return all(r.matches(labels) for r in requirements)


def selector_predicate(text: str | None) -> Callable[[Mapping[str, str]], bool]:
    requirements = parse_selector(text)
    return lambda labels: matches(requirements, labels)
