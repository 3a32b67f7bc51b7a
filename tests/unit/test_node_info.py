"""What a hello may say of its node (scheduler/hub.py `check_node_info`)."""

from __future__ import annotations

from typing import Any

import pytest

from common import protocol
from scheduler.hub import check_node_info

CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "110"}


def _info(**fields: Any) -> protocol.NodeInfo:
    return protocol.NodeInfo(
        **{"name": "node-a", "capacity": CAPACITY, "allocatable": CAPACITY, **fields}
    )


def test_a_node_as_agents_describe_it_is_taken() -> None:
    info = {"kernelVersion": "6.1.0-28-amd64", "osImage": "Debian GNU/Linux 12 (bookworm)"}
    check_node_info(_info(address="10.0.0.2", info=info))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"address": "a" * 254}, "address is at most 253 characters, not 254"),
        ({"info": {f"k{i}": "v" for i in range(65)}}, "info has 65 entries, more than 64"),
        (
            {"capacity": {**CAPACITY, **{f"example.com/r{i}": "1" for i in range(62)}}},
            "capacity has 65 entries, more than 64",
        ),
        ({"info": {"osImage": "x" * 1025}}, "info.osImage: keys are at most 63 characters"),
        ({"info": {"k" * 64: "v"}}, r"info\.k{64}: keys are at most 63"),
        ({"allocatable": {**CAPACITY, "pods": "lots"}}, "allocatable.pods: "),
    ],
)
def test_a_node_that_says_too_much_is_refused_saying_what(
    fields: dict[str, Any], message: str
) -> None:
    """The Node object goes into every list of nodes: a hello of a 10 MB address, or of
    300,000 info entries, made it that big (found by fuzzing the link)."""
    with pytest.raises(ValueError, match=message):
        check_node_info(_info(**fields))
