"""The control plane's storage: database, tables, migrations and the audit outbox."""
