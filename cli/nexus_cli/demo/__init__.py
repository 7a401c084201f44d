"""``nexus-policy demo``: the whole flow on one machine, with real OPA and Envoy.

1. Keys (kept in ``.nexus/keys``) and throwaway demo API keys (an overlay that
   binds fresh keys to the example bundle's roles; the plain keys never leave
   this process).
2. ``bundles/gateway`` built, tested and signed.
3. The control plane (SQLite, in-process spend counters) with the audit
   service, and three regions of enforcers: Envoy + OPA in the canary, OPA in
   the later waves.
4. The first publication, approved by a second person and rolled out wave by wave.
5. The requests of `nexus_cli.demo.scenarios` through Envoy, one per concern;
   usage reported until tenants cross their soft and hard caps.
6. A routine change rolled out without approval.
7. A revision OPA refuses to activate, contained in the canary.
8. The audit trail: every decision a leaf, the log verified, an evidence
   archive exported and verified offline.
"""
