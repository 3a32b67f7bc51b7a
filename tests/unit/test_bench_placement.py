"""bench/placement.py's reading of the scheduler's garbage-collector histogram."""

from __future__ import annotations

from bench.placement import GC_BUCKETS, GC_SECONDS, Samples, gc_pauses


def _scrape(sums: dict[str, float], buckets: dict[str, dict[str, float]]) -> Samples:
    return {
        GC_SECONDS: [({"generation": g}, v) for g, v in sums.items()],
        GC_BUCKETS: [
            ({"generation": g, "le": le}, n)
            for g, counts in buckets.items()
            for le, n in counts.items()
        ],
    }


def test_gc_seconds_and_longest_pause_between_two_scrapes() -> None:
    """Seconds are summed over generations; the longest pause is the smallest bound that
    holds all the new pauses of every generation, pauses before the first scrape aside."""
    before = _scrape(
        {"0": 1.0, "1": 0.5},
        {"0": {"0.05": 3, "0.1": 5, "+Inf": 5}, "1": {"0.05": 0, "0.1": 1, "+Inf": 1}},
    )
    after = _scrape(
        {"0": 2.0, "1": 0.5},
        {"0": {"0.05": 4, "0.1": 7, "+Inf": 7}, "1": {"0.05": 0, "0.1": 1, "+Inf": 1}},
    )
    assert gc_pauses(before, after) == (1.0, "0.1")
    after[GC_BUCKETS].append(({"generation": "2", "le": "+Inf"}, 1))
    assert gc_pauses(before, after) == (1.0, "+Inf")


def test_no_pause_and_no_histogram() -> None:
    scrape = _scrape({"0": 1.0}, {"0": {"0.05": 3, "+Inf": 3}})
    assert gc_pauses(scrape, scrape) == (0.0, None)
    assert gc_pauses({}, {}) == (None, None)
