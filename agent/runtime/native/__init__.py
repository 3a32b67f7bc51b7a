"""The native runtime: Linux namespaces, cgroups (v1 and v2), overlay root filesystems."""
