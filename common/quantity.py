"""Kubernetes resource quantities (`500m`, `2`, `129e6`, `1.5Gi`) with exact integer arithmetic.

A quantity is parsed once into a `Fraction` so that no float rounding creeps in;
CPU is then counted in millicores and memory in bytes, both rounded *up* as
Kubernetes does (`0.1m` of CPU is 1 millicore, `0.5` bytes is 1 byte).
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
# The grammar of k8s.io/apimachinery/pkg/api/resource: a signed decimal number
# followed by a binary suffix, a decimal suffix, or a decimal exponent.
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
# Bounds keep a hostile exponent (`1e999999999`) or mantissa (a thousand digits)
# from building a huge integer.
_MAX_EXPONENT = 30
_MAX_DIGITS = 40


class QuantityError(ValueError):
    """A string that is not a valid Kubernetes quantity."""


def parse_quantity(text: str | int | float) -> Fraction:
    """Parse a quantity into an exact non-negative rational number of base units."""
    if type(text) is str:
        return _parse_cached(text)
    return _parse(text)


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Fraction:
    # The same few quantities (`100m`, `64Mi`) come up again and again.
    return _parse(text)


def _parse(text: str | int | float) -> Fraction:
    if isinstance(text, bool):
        raise QuantityError(f"quantities must be strings or numbers, not {text!r}")
    if isinstance(text, int):
        text = str(text)
    elif isinstance(text, float):
        if not math.isfinite(text):
            raise QuantityError(f"{text!r} is not a finite number")
        text = repr(text)
    if not isinstance(text, str):
        raise QuantityError(f"quantities must be strings or numbers, not {type(text).__name__}")
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise QuantityError(
            f"{text!r} is not a quantity: expected a number with an optional suffix "
            "such as 500m, 2, 129e6, 128Mi or 1.5Gi"
        )
    if sum(ch.isdigit() for ch in match["num"]) > _MAX_DIGITS:
        raise QuantityError(f"{text!r}: more than {_MAX_DIGITS} digits")
    number = Fraction(match["num"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        value = number * _BINARY[suffix]
    elif suffix in _DECIMAL:
        value = number * _DECIMAL[suffix]
    else:
        exponent = int(suffix[1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise QuantityError(f"{text!r}: exponent {exponent} is out of range")
        value = number * Fraction(10) ** exponent
    if value < 0:
        raise QuantityError(f"{text!r}: quantities must not be negative")
    return value


def cpu_millis(text: str | int | float) -> int:
    """CPU in millicores, rounded up: `500m` -> 500, `0.5` -> 500, `2` -> 2000."""
    if type(text) is str:
        return _cpu_millis_cached(text)
    return math.ceil(_parse(text) * 1000)


def memory_bytes(text: str | int | float) -> int:
    """Memory (or any byte count) in bytes, rounded up: `1Gi` -> 1073741824."""
    if type(text) is str:
        return _memory_bytes_cached(text)
    return math.ceil(_parse(text))


# The integers too: Fraction arithmetic costs several microseconds a quantity, and
# every new pod's requests are counted from the same few strings.
@functools.lru_cache(maxsize=4096)
def _cpu_millis_cached(text: str) -> int:
    return math.ceil(_parse_cached(text) * 1000)


@functools.lru_cache(maxsize=4096)
def _memory_bytes_cached(text: str) -> int:
    return math.ceil(_parse_cached(text))


def format_cpu(millis: int) -> str:
    """Millicores in the shortest Kubernetes form: 2000 -> `2`, 1500 -> `1500m`."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(num_bytes: int) -> str:
    """Bytes in the largest exact binary unit: 268435456 -> `256Mi`."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if num_bytes and num_bytes % unit == 0:
            return f"{num_bytes // unit}{suffix}"
    return str(num_bytes)


def humanize_bytes(num_bytes: int) -> str:
    """An approximate, human-readable size for tables: `1.5Gi`, `300Mi`."""
    value = float(num_bytes)
    for suffix in ("", "Ki", "Mi", "Gi", "Ti"):
        if value < 1024 or suffix == "Ti":
            return f"{value:.0f}{suffix}" if value >= 10 or not suffix else f"{value:.1f}{suffix}"
        value /= 1024
    return str(num_bytes)
