"""Runtimes: one interface (`base.Runtime`), implementations `native` and (later) `docker`."""
