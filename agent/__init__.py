"""corral-agent: the node agent."""
