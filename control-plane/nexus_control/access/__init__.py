"""Access: who may call the control plane (tokens, roles), and the keys it signs with."""
