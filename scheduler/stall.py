"""The rule by which the scheduler's own timers tell that it stalled."""

from __future__ import annotations


def woke_from_stall(due: float, woke: float, limit: float) -> bool:
    """Whether a timer due at `due` that woke at `woke` means the scheduler itself
    stalled: it woke at least half `limit` late, `limit` being the silence the timer
    judges peers by (a node grace, the agent links' silence limit).

    A stalled scheduler (a VM or process pause, a long garbage-collector pause) runs
    nothing, so it reads no frame either, and on waking its timers may run before the
    frames buffered in its sockets are read: every peer then looks silent for as long
    as the stall, through no fault of its own. So a timer that late blames the
    scheduler, not the peers. Each timer measures its own sleep against this rule:
    after a stall either may run first, so none can count on another having noticed.
    """
    return woke - due >= limit / 2
