"""What a hello may say of its node (scheduler/hub.py `check_node_info`)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agent.config import AgentConfig
from common import protocol
from common.nodelabels import check_agent_labels, restricted_keys
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
        ({"info": {"osImage": "x" * 1025}}, "info.osImage: a value is at most 1024 characters"),
        ({"info": {"k" * 64: "v"}}, r"info\.k{64}: a key is at most 63 characters, not 64"),
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


@pytest.mark.parametrize(
    "key",
    [
        "node-role.kubernetes.io/worker",
        "node-restriction.kubernetes.io/pci",
        "kubernetes.io/role",
        "k8s.io/anything",
        "team.k8s.io/owner",
    ],
)
def test_a_node_may_not_label_itself_in_the_restricted_namespaces(key: str) -> None:
    """As Kubernetes' NodeRestriction: `node-restriction.kubernetes.io/` labels exist so that
    an administrator can keep workloads to nodes that cannot claim them themselves."""
    assert restricted_keys({key: "", "disk": "ssd"}) == [key]
    with pytest.raises(ValueError, match=re.escape(f"may not set on itself: {key} ")):
        check_agent_labels({key: "", "disk": "ssd"})


@pytest.mark.parametrize(
    "key",
    [
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "topology.kubernetes.io/zone",
        "node.kubernetes.io/instance-type",
        "node.kubernetes.io/exclude-from-external-load-balancers",
        "example.kubelet.kubernetes.io/x",
        "disk",
        "example.com/gpu",
        "kubernetes.iox/not-restricted",
    ],
)
def test_a_node_may_label_itself_as_a_kubelet_may(key: str) -> None:
    assert restricted_keys({key: "v"}) == []
    check_agent_labels({key: "v"})


def test_an_agent_with_a_restricted_label_in_its_config_does_not_start() -> None:
    with pytest.raises(ValueError, match=re.escape("node-role.kubernetes.io/worker")):
        AgentConfig.model_validate({"labels": {"node-role.kubernetes.io/worker": ""}})
    assert AgentConfig.model_validate({"labels": {"disk": "ssd"}}).labels == {"disk": "ssd"}
