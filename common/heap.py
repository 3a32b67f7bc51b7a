"""Garbage-collector settings for processes that keep a large, long-lived heap."""

from __future__ import annotations

import gc
from typing import Any


def tune_gc_for_large_heap() -> None:
    """Freeze what exists now, collect the young generation less often, and freeze what
    survives each young collection.

    The scheduler keeps every object in memory, and a hollow-agent process simulates
    hundreds of nodes: millions of long-lived objects that the cyclic GC would otherwise
    traverse again and again (with Python's defaults, a hollow process spent a fifth of
    its CPU in the collector). Frozen objects are never traversed; reference counting
    still frees everything without cycles at once.

    Survivors are frozen because, in a burst of pods, nearly every young object is state
    that stays (measured: 49-51 young collections of a 30,000-pod run freed 113 objects
    in all), and Python's middle generation only traversed that state a second time: in a
    100,000-pod run its two collections freed nothing and stopped the event loop for up
    to 1.5 s (docs/benchmarks.md, session 11). Cycles that become garbage before the next
    young collection are still collected; the old generation was never collected with
    these thresholds anyway.
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


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


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == 0:
        gc.freeze()
