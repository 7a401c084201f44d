"""Signing keys behind one interface: files for the demo, PKCS#11 tokens in production.

A :class:`~nexus_runtime.keys.provider.KeyProvider` creates and opens keys by
reference; an opened :class:`~nexus_runtime.keys.provider.SigningKey` signs
bytes and shows its public key, and nothing else: no provider hands out a
private key. The control plane signs bundles, state bundles and tool
approvals through it; the audit service's checkpoint and master keys can use
the same interface.
"""
