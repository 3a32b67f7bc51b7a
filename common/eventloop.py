"""The daemons' event loop: uvloop where it is installed (DESIGN.md), else asyncio's."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to its end on a new loop. Only uvloop's import is guarded: an ImportError
    from `main` itself is raised, not taken for uvloop's absence."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def new_loop() -> asyncio.AbstractEventLoop:
    """A new loop of the kind `run` runs (for code that drives a loop by hand)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
