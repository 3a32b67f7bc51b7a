"""Shapes that cross a process boundary: models, quantities, manifests, wire protocol."""
