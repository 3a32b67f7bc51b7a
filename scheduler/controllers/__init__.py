"""Controllers: node lifecycle and, later, deployments, jobs and garbage collection."""
