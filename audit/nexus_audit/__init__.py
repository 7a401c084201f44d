"""NexusAI audit service: Merkle log, checkpoints, proofs and evidence."""
