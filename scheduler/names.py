"""Generated names, as Kubernetes makes them: a base and 5 random characters of an
alphabet without vowels (no words) and without look-alikes (`0`, `o`, `1`, `l`...)."""

from __future__ import annotations

import random

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
RANDOM_LENGTH = 5
# kube-apiserver's names.SimpleNameGenerator keeps at most this much of a generateName,
# so that a generated name fits in 63 characters (a DNS label) whatever the kind.
MAX_GENERATED_BASE = 63 - RANDOM_LENGTH


def random_suffix(length: int = RANDOM_LENGTH) -> str:
    return "".join(random.choices(ALPHABET, k=length))


def from_generate_name(base: str) -> str:
    """The name kube-apiserver gives an object created with `metadata.generateName` `base`
    and no name: `base` (cut to MAX_GENERATED_BASE) and 5 random characters."""
    return base[:MAX_GENERATED_BASE] + random_suffix()
