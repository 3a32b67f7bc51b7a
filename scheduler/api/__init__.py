"""The scheduler's HTTP API (aiohttp): one module of routes per resource."""
