"""bench.link_churn's arithmetic."""

from __future__ import annotations

from bench.link_churn import growth_kib_per_node


def test_growth_is_per_node_between_the_first_and_last_wave() -> None:
    # 3 waves of 512 nodes, 2 MiB a wave: 4 KiB a node.
    assert growth_kib_per_node([100.0, 102.0, 104.0], 512) == 4.0
    assert growth_kib_per_node([100.0, 99.0], 1024) == -1.0  # shrinking shows as such
    assert growth_kib_per_node([100.0], 500) is None
    assert growth_kib_per_node([], 500) is None
