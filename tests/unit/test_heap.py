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
    from common.heap import GcPacer

    def cycle():
        c = [None]
        c[0] = c

    with GcPacer(min_gap=3600) as pacer:
        assert gc.get_threshold() == (10_000, 50, 1000)
        assert gc.callbacks.count(pacer._callback) == 1
        frozen = gc.get_freeze_count()

        kept = [[i] for i in range(1000)]  # survives the young collection
        cycle()  # garbage before the first young collection: collected
        assert gc.collect(0) >= 1
        assert (pacer.collections, pacer.deferred) == (1, 0)
        assert gc.get_freeze_count() >= frozen + 1000, (gc.get_freeze_count(), frozen)
        assert all(gc.is_tracked(x) for x in kept)

        # The next one, due within min_gap, is a freeze: it traverses nothing, so the
        # cycle made since is not found but frozen (the price the pacer pays).
        frozen = gc.get_freeze_count()
        more = [[i] for i in range(1000)]
        cycle()
        assert gc.collect(0) == 0
        assert (pacer.collections, pacer.deferred) == (1, 1) and pacer.deferring
        assert gc.get_freeze_count() >= frozen + 1002, (gc.get_freeze_count(), frozen)

        # A full collection asked for is left alone: it finds the garbage, and it is
        # neither a young collection nor a freeze.
        cycle()
        assert gc.collect() >= 1
        assert (pacer.collections, pacer.deferred) == (1, 1) and not pacer.deferring
    assert pacer._callback not in gc.callbacks

    with GcPacer(min_gap=0) as pacer:  # every collection due runs
        cycle()
        assert gc.collect(0) >= 1
        cycle()
        assert gc.collect(0) >= 1
        assert (pacer.collections, pacer.deferred) == (2, 0)
    print("ok")
    """
)


def test_young_collections_are_paced_and_survivors_frozen() -> None:
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
