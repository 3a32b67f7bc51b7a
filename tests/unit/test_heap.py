"""common.heap's collector settings, in a process of their own (they change the whole
interpreter's collector, which this test process must keep as it was)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from common.heap import drop_tracebacks

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = textwrap.dedent(
    """
    import gc
    from common.heap import _freeze_survivors, tune_gc_for_large_heap

    tune_gc_for_large_heap()
    tune_gc_for_large_heap()  # twice, as a process may: one hook, not two
    assert gc.get_threshold() == (50_000, 50, 1000)
    assert gc.callbacks.count(_freeze_survivors) == 1
    frozen = gc.get_freeze_count()

    kept = [[i] for i in range(1000)]  # survives the young collection
    cycle = [None]
    cycle[0] = cycle
    del cycle  # garbage before the young collection: still collected
    collected = gc.collect(0)
    assert collected >= 1, collected
    assert gc.get_freeze_count() >= frozen + 1000, (gc.get_freeze_count(), frozen)
    assert all(gc.is_tracked(x) for x in kept)
    print("ok")
    """
)


def test_survivors_of_a_young_collection_are_frozen_and_garbage_collected() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_drop_tracebacks_follows_causes_contexts_and_groups() -> None:
    """Every error linked to the one given loses its traceback: what it was raised from
    (aiohttp sets `__cause__` on link errors), what it was raised in, a group's members."""

    def raised(
        error: Exception, cause: Exception | None = None, context: Exception | None = None
    ) -> Exception:
        try:
            try:
                if context is not None:
                    raise context
            except Exception:
                raise error from cause
            raise error from cause
        except Exception as caught:
            return caught

    member = raised(OSError("member"))
    group = raised(ExceptionGroup("group", [member]))
    cause = raised(ValueError("cause"), context=group)
    context = raised(KeyError("context"))
    error = raised(RuntimeError("error"), cause=cause, context=context)
    errors = (error, cause, context, group, member)
    assert error.__cause__ is cause and error.__context__ is context
    assert all(e.__traceback__ is not None for e in errors)
    drop_tracebacks(error)
    assert [e for e in errors if e.__traceback__ is not None] == []
    drop_tracebacks(None)  # no error: nothing to do
