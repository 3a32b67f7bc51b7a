"""The restart decision on its own: policies, immediate first restart, backoff, reset, jitter."""

from __future__ import annotations

import random

import pytest

from agent.restart import ANNOTATION_CAP, ANNOTATION_INITIAL, RestartBackoff, should_restart


@pytest.mark.parametrize(
    ("policy", "code", "expected"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 137, True),
        ("Never", 1, False),
        ("Never", 0, False),
    ],
)
def test_policies(policy: str, code: int, expected: bool) -> None:
    """Always restarts, OnFailure only on a non-zero exit, Never never."""
    assert should_restart(policy, code) is expected


def test_first_restart_immediate_then_doubling_to_cap() -> None:
    """0, 1, 2, 4, ... capped, each within the jitter band."""
    backoff = RestartBackoff(initial=1.0, cap=8.0, rng=random.Random(1))
    delays = [backoff.on_exit("Always", 1, ran_for=0.1).delay for _ in range(7)]
    assert delays[0] == 0.0
    for got, want in zip(delays[1:], [1, 2, 4, 8, 8, 8], strict=True):
        assert want * 0.9 <= got <= min(want * 1.1, 8.0), (got, want)


@pytest.mark.parametrize(("initial", "cap"), [(1.0, 60.0), (0.0, 0.0), (1e-9, 1e9)])
def test_backoff_stays_capped_however_long_it_crash_loops(initial: float, cap: float) -> None:
    """Thousands of quick exits in a row (17 hours of a crash loop at the default cap)
    still give a delay within the cap, never an error."""
    backoff = RestartBackoff(initial=initial, cap=cap)
    for _ in range(5000):
        decision = backoff.on_exit("Always", 1, ran_for=0.1)
        assert decision.restart and 0 <= decision.delay <= cap
    assert decision.delay >= cap * 0.9


def test_waiting_reason_is_crashloop() -> None:
    """A delayed restart is a CrashLoopBackOff; the immediate one is not."""
    backoff = RestartBackoff()
    assert backoff.on_exit("Always", 1, 0).reason == ""
    assert backoff.on_exit("Always", 1, 0).reason == "CrashLoopBackOff"


def test_reset_after_a_clean_run() -> None:
    """A container that ran long enough starts from an immediate restart again."""
    backoff = RestartBackoff(initial=1.0, cap=60.0, reset_after=10.0)
    for _ in range(5):
        backoff.on_exit("Always", 1, 0.1)
    assert backoff.on_exit("Always", 1, ran_for=11.0).delay == 0.0
    assert backoff.on_exit("Always", 1, ran_for=0.1).delay > 0


def test_no_restart_means_no_delay() -> None:
    """A finished container is not restarted at all."""
    decision = RestartBackoff().on_exit("OnFailure", 0, 5.0)
    assert not decision.restart and decision.delay == 0


def test_annotations() -> None:
    """Per-pod settings come from annotations; nonsense falls back to the defaults."""
    backoff = RestartBackoff.for_annotations({ANNOTATION_INITIAL: "0.25", ANNOTATION_CAP: "2"})
    assert (backoff.initial, backoff.cap) == (0.25, 2.0)
    fallback = RestartBackoff.for_annotations({ANNOTATION_INITIAL: "soon", ANNOTATION_CAP: "-1"})
    assert (fallback.initial, fallback.cap) == (1.0, 60.0)
    with pytest.raises(ValueError):
        RestartBackoff(initial=5, cap=1)
