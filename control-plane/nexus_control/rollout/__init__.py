"""Rollout: the fleet of regions and waves, and the engine that moves a revision through it."""
