"""NexusAI policy control plane: specs, compiler, signed bundles, rollout."""

__version__ = "0.1.0"
