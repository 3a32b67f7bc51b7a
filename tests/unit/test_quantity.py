"""Kubernetes quantities: parsing into millicores and bytes, refusals, formatting."""

from __future__ import annotations

from fractions import Fraction

import pytest

from common.quantity import (
    QuantityError,
    cpu_millis,
    format_cpu,
    format_memory,
    humanize_bytes,
    memory_bytes,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("100m", 100),
        ("500m", 500),
        ("0.5", 500),
        ("2", 2000),
        ("1.5", 1500),
        (".25", 250),
        ("0.1m", 1),  # rounded up, never down to zero
        ("1m", 1),
        ("250000u", 250),
        ("1e3", 1_000_000),
        ("0", 0),
        (2, 2000),
        (0.5, 500),
        (0.001, 1),
    ],
)
def test_cpu_millis(text: str | int | float, millis: int) -> None:
    """CPU quantities become whole millicores, rounded up."""
    assert cpu_millis(text) == millis


@pytest.mark.parametrize(
    ("text", "num_bytes"),
    [
        ("128974848", 128974848),
        ("129e6", 129_000_000),
        ("129E6", 129_000_000),
        ("129M", 129_000_000),
        ("123Mi", 123 * 1024 * 1024),
        ("1Gi", 1073741824),
        ("1.5Gi", 1610612736),
        ("1Ki", 1024),
        ("1k", 1000),
        ("1Ti", 2**40),
        ("2Ei", 2 * 2**60),
        ("1G", 10**9),
        ("0.5", 1),  # half a byte is a byte
        ("1.0000001Ki", 1025),
        (1024, 1024),
        (1.5, 2),
        (" 1Gi ", 1073741824),
    ],
)
def test_memory_bytes(text: str | int | float, num_bytes: int) -> None:
    """Memory quantities become exact byte counts, rounded up."""
    assert memory_bytes(text) == num_bytes


def test_parse_is_exact() -> None:
    """Parsing keeps exact fractions: no float rounding on the way."""
    assert parse_quantity("0.1") == Fraction(1, 10)
    assert parse_quantity("1.1Gi") * 10 == 11 * 2**30
    assert parse_quantity("1e-3") == Fraction(1, 1000)


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "1.2.3",
        "5 Gi",
        "-1",
        "-100m",
        "1e999",
        "1e-999",
        "Mi",
        "1X",
        "",
        "  ",
        "e3",
        "1e3m",
        "1mi",
        "1gi",
        "0x10",
        "1_000",
        "\u0661",  # ARABIC-INDIC DIGIT ONE: only ASCII digits are numbers
    ],
)
def test_invalid_strings_refused(text: str) -> None:
    """Malformed, negative or absurd quantities raise QuantityError naming the input."""
    with pytest.raises(QuantityError) as info:
        parse_quantity(text)
    assert repr(text) in str(info.value)


def test_invalid_message_explains() -> None:
    """The message says what a quantity looks like."""
    with pytest.raises(QuantityError, match=r"'1X' is not a quantity: expected a number"):
        parse_quantity("1X")
    with pytest.raises(QuantityError, match="must not be negative"):
        parse_quantity("-1")
    with pytest.raises(QuantityError, match="exponent 999 is out of range"):
        parse_quantity("1e999")


@pytest.mark.parametrize("value", [True, False, None, [1], {"a": 1}, b"1"])
def test_non_numbers_refused(value: object) -> None:
    """Booleans and other types are not quantities, even though bool is an int."""
    with pytest.raises(QuantityError, match="strings or numbers"):
        parse_quantity(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 1e300])
def test_non_finite_or_huge_floats_refused(value: float) -> None:
    """Infinite, NaN and astronomically large floats are refused."""
    with pytest.raises(QuantityError):
        parse_quantity(value)


def test_huge_mantissa_refused() -> None:
    """Thousands of digits are refused cleanly instead of hitting int-parsing limits."""
    with pytest.raises(QuantityError, match="digits"):
        parse_quantity("9" * 5000)
    with pytest.raises(QuantityError, match="digits"):
        parse_quantity("0." + "1" * 5000)


def test_quantity_error_is_value_error() -> None:
    """QuantityError is a ValueError, so pydantic validators turn it into a field error."""
    assert issubclass(QuantityError, ValueError)


@pytest.mark.parametrize(
    ("millis", "text"), [(0, "0"), (2000, "2"), (1500, "1500m"), (1, "1m"), (100, "100m")]
)
def test_format_cpu(millis: int, text: str) -> None:
    """Millicores print in the shortest form that parses back to the same value."""
    assert format_cpu(millis) == text
    assert cpu_millis(text) == millis


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (0, "0"),
        (268435456, "256Mi"),
        (1073741824, "1Gi"),
        (1610612736, "1536Mi"),
        (1024, "1Ki"),
        (1000, "1000"),
        (2**60, "1Ei"),
        (1025, "1025"),
    ],
)
def test_format_memory(num_bytes: int, text: str) -> None:
    """Bytes print in the largest exact binary unit and parse back to the same value."""
    assert format_memory(num_bytes) == text
    assert memory_bytes(text) == num_bytes


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (0, "0"),
        (1023, "1023"),
        (1024, "1.0Ki"),
        (1610612736, "1.5Gi"),
        (300 * 2**20, "300Mi"),
        (5 * 2**40, "5.0Ti"),
        (2000 * 2**40, "2000Ti"),
    ],
)
def test_humanize_bytes(num_bytes: int, text: str) -> None:
    """Approximate sizes for tables: one decimal below ten, none above."""
    assert humanize_bytes(num_bytes) == text
