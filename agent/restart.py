"""The restart decision: a small object with no I/O. Time and an exit in, a decision out.

    exit ──> policy says no restart (Never; OnFailure and exit 0) ──> Decision(restart=False)
      │
      └──> restart: the first restart after a clean run is immediate; then the delay
           doubles from `initial` up to `cap`, with +-10% jitter; a container that ran
           for `reset_after` seconds before exiting starts again from an immediate restart.

Kubernetes uses 10 s doubling to 300 s; corral defaults to 1 s and 60 s and lets a
pod set both with the annotations `corral.dev/restart-backoff-initial` and
`corral.dev/restart-backoff-cap` (seconds).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ANNOTATION_INITIAL = "corral.dev/restart-backoff-initial"
ANNOTATION_CAP = "corral.dev/restart-backoff-cap"
DEFAULT_INITIAL = 1.0
DEFAULT_CAP = 60.0
DEFAULT_RESET_AFTER = 120.0
JITTER = 0.1
MAX_DOUBLINGS = 1000  # any cap is reached long before (2 ** 1000 is about 1e301)


@dataclass(frozen=True, slots=True)
class Decision:
    restart: bool
    delay: float = 0.0
    reason: str = ""  # "CrashLoopBackOff" while waiting out a delay


def should_restart(policy: str, exit_code: int) -> bool:
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False


class RestartBackoff:
    """Per-container backoff state. `on_exit` is called once per exit of the container."""

    def __init__(
        self,
        initial: float = DEFAULT_INITIAL,
        cap: float = DEFAULT_CAP,
        reset_after: float = DEFAULT_RESET_AFTER,
        rng: random.Random | None = None,
    ) -> None:
        if initial < 0 or cap < initial:
            raise ValueError(f"backoff needs 0 <= initial ({initial}) <= cap ({cap})")
        self.initial, self.cap, self.reset_after = initial, cap, reset_after
        self._rng = rng or random.Random()
        self._failures = 0  # consecutive quick exits

    def on_exit(self, policy: str, exit_code: int, ran_for: float) -> Decision:
        if not should_restart(policy, exit_code):
            return Decision(False)
        if ran_for >= self.reset_after:
            self._failures = 0
        self._failures += 1
        if self._failures == 1:
            return Decision(True, 0.0)
        # The exponent is bounded: 2 ** 1024 no longer converts to a float, and a
        # container that crash-looped for a day would end its supervision with an error.
        delay = min(self.cap, self.initial * 2 ** min(self._failures - 2, MAX_DOUBLINGS))
        delay *= 1 + self._rng.uniform(-JITTER, JITTER)
        return Decision(True, min(delay, self.cap), "CrashLoopBackOff")

    @classmethod
    def for_annotations(cls, annotations: dict[str, str]) -> RestartBackoff:
        """Backoff settings from a pod's annotations; invalid values fall back to defaults."""

        def read(key: str, default: float) -> float:
            try:
                value = float(annotations.get(key, default))
            except ValueError:
                return default
            return value if value >= 0 else default

        initial = read(ANNOTATION_INITIAL, DEFAULT_INITIAL)
        cap = max(initial, read(ANNOTATION_CAP, DEFAULT_CAP))
        return cls(initial, cap)
