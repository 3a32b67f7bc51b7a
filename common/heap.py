"""Garbage-collector settings for processes that keep a large, long-lived heap."""

from __future__ import annotations

import gc
import math
import time
from typing import Any


class GcPacer:
    """Tunes the cyclic collector for a process that keeps a large, long-lived heap, and
    paces its young collections: at most one every `min_gap` seconds. A collection due
    sooner finds the young generation frozen and traverses nothing.

    The scheduler keeps every object in memory, and a hollow-agent process simulates
    hundreds of nodes: millions of long-lived objects that the collector would otherwise
    traverse again and again. So everything that exists at the start is frozen (never
    traversed again; reference counting still frees what has no cycle at once), and so is
    what survives each young collection: in a burst of pods nearly every young object is
    state that stays, and Python's older generations only traversed it again (in a
    100,000-pod run, two middle-generation collections freed nothing and stopped the
    event loop for up to 1.5 s; docs/benchmarks.md, session 11).

    Even so, a young collection traverses every object made since the last one, and
    under load nearly all of them survive: at 5,000 pods/s the collector took a sixth of
    the scheduler's CPU. The scheduler makes almost no cyclic garbage: a whole 5,000-node
    benchmark run with the collector off left 113 objects of it, functions and cells of
    the kind start-up makes (docs/benchmarks.md, session 16), and
    tests/integration/test_cycles.py requires that the API's failures and the
    controllers' work make none. So a young collection that comes less than `min_gap`
    after the last one is turned into a freeze, which costs nothing per object. The
    price: a cycle that is born and becomes garbage between such a freeze and the one
    before it stays in memory for good, as one that outlived a young collection already
    did. Full collections (`gc.collect()`) are left as they are.

    Installed as a context manager; `collections` and `deferred` count the young
    collections run and the ones turned into freezes.
    """

    def __init__(self, min_gap: float = 1.0) -> None:
        self.min_gap = min_gap
        self.collections = 0
        self.deferred = 0
        # Whether the latest collection was turned into a freeze (until the next starts):
        # the pause histogram leaves those out, whichever hook runs first.
        self.deferring = False
        self._last_collection = -math.inf

    def __enter__(self) -> GcPacer:
        gc.freeze()
        # Due every 10,000 tracked objects (allocations less frees, frees of frozen
        # objects included, so the young generation can hold more): 50,000 let the
        # collections that run reach 100-250 ms pauses; 10,000 kept them under 50 ms and
        # the collector's share about 1% (5,000-node A/B, session 16); 2,000 did no
        # better. Due more often, more of them are turned into freezes, which keep a
        # cycle made meanwhile: the scheduler's paths make none (test_cycles.py).
        gc.set_threshold(10_000, 50, 1000)
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        # Runs on whichever thread allocated; the GIL orders the updates. A full
        # collection (generation 2, as `gc.collect()` asks) is left alone: whoever asks
        # for one wants the garbage found.
        young = info["generation"] < 2
        if phase == "start":
            now = time.monotonic()
            self.deferring = young and now - self._last_collection < self.min_gap
            if self.deferring:
                gc.freeze()  # the collection that follows finds nothing young
                self.deferred += 1
            elif young:
                self._last_collection = now
                self.collections += 1
        elif young:
            gc.freeze()  # the survivors


def drop_tracebacks(error: BaseException | None) -> None:
    """Drop the tracebacks of `error` and of every error linked to it: its cause, the
    error it was raised in, and a group's members, all the way down.

    For an error that something reachable from its own traceback keeps: the traceback
    holds the frames it passed through, their locals hold that something, and the cycle
    is left for good once it has outlived a young collection (see above). Without the
    tracebacks, reference counting frees it all.
    """
    seen: set[int] = set()
    todo = [error]
    while todo:
        error = todo.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        error.__traceback__ = None
        todo += (error.__cause__, error.__context__)
        if isinstance(error, BaseExceptionGroup):
            todo += error.exceptions
