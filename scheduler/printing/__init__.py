"""What `get` prints for each resource, shared by `corral get` and the API's Tables.

`cells` says what one cell holds (a pod's READY, a job's DURATION); `columns`
groups cells into kube-apiserver's column sets. Pure functions of API objects
(plain dicts, as decoded from JSON) and the time, importing nothing heavy, so
that the CLI stays light and the API serves the same words kubectl would.
"""
