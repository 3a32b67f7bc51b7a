"""The CLI's own error: a problem found without asking the server."""

from __future__ import annotations


class CommandError(Exception):
    """A problem found before or without asking the server (usage, a bad manifest).

    `main` prints it as `error: MESSAGE` and exits 1.
    """
