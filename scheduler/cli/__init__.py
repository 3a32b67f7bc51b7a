"""`corral`: the command-line client of the scheduler's HTTP API.

Kept light on purpose: standard library HTTP, plain dicts for what it prints,
and pydantic (via `common.manifest`) only when a manifest must be validated.
"""
