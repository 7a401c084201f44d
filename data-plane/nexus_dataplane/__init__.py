"""NexusAI data plane: enforcer configuration, supervision and the Python SDK."""
