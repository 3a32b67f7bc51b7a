"""The Docker runtime: pods as Docker containers through aiodocker (runtimeClassName: docker)."""
