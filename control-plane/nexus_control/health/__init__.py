"""Provider and model health: reports in, degraded targets out to the state bundle."""
