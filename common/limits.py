"""Size limits on what a client may store, each with the reason for its number.

The request body limit (`max_body_bytes`, 8 MiB) bounds a request; these bound
the parts of one object that are copied everywhere it goes (the store, every
list, every agent that runs it), as the Kubernetes API server does.
"""

from __future__ import annotations

# Kubernetes' TotalAnnotationSizeLimitB: keys and values of one object's annotations.
MAX_ANNOTATION_BYTES = 256 * 1024
# execve(2) refuses one "NAME=value" string longer than MAX_ARG_STRLEN (32 pages)...
MAX_ENV_VAR_BYTES = 128 * 1024
# ...and an environment that, with the arguments, passes a quarter of the stack limit
# (2 MiB by default); a container's env is kept well below that.
MAX_ENV_BYTES = 256 * 1024
# The widths of Kubernetes' integer fields (replicas, completions and probe periods are
# int32; grace periods, deadlines, `limit` and `timeoutSeconds` int64). Python's are
# unbounded: a Deployment of 2**31 replicas had its controller build that many pods in
# memory, and a number past 4300 digits cannot even be written back as JSON.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# The largest page a list may ask for (`?limit=`); without `limit` a list is whole.
MAX_LIST_LIMIT = 10_000

__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "MAX_ANNOTATION_BYTES",
    "MAX_ENV_BYTES",
    "MAX_ENV_VAR_BYTES",
    "MAX_LIST_LIMIT",
    "check_annotations",
    "check_env_sizes",
]


def check_annotations(annotations: dict[str, str]) -> dict[str, str]:
    """Annotation keys are label keys (optional DNS prefix, a name of at most 63), and all
    keys and values together are at most 256 KiB; ValueError otherwise."""
    from common.models import check_label_key  # models imports this module

    total = 0
    for key, value in annotations.items():
        check_label_key(key)
        total += len(key.encode()) + len(value.encode())
    if total > MAX_ANNOTATION_BYTES:
        raise ValueError(
            f"annotations total {total} bytes; at most {MAX_ANNOTATION_BYTES} "
            f"({MAX_ANNOTATION_BYTES // 1024} KiB) are allowed"
        )
    return annotations


def check_env_sizes(pairs: list[tuple[str, str]]) -> None:
    """Each `NAME=value` at most 128 KiB and all of them at most 256 KiB; ValueError if not."""
    total = 0
    for name, value in pairs:
        size = len(name.encode()) + 1 + len(value.encode())
        if size > MAX_ENV_VAR_BYTES:
            raise ValueError(
                f"environment variable {name} is {size} bytes; at most {MAX_ENV_VAR_BYTES} "
                "(execve's limit on one string)"
            )
        total += size
    if total > MAX_ENV_BYTES:
        raise ValueError(
            f"the environment totals {total} bytes; at most {MAX_ENV_BYTES} "
            f"({MAX_ENV_BYTES // 1024} KiB) per container"
        )


# What one image layer may unpack to, by default (the agent's `max_layer_bytes`): here, not
# in agent/runtime/native/tarsafe.py, so that reading the agent's configuration (the
# `corral` command does, for `install`) does not load the native runtime. containerd has
# no such bound; this one is generous, and only stops a runaway layer.
MAX_LAYER_BYTES = 64 << 30
