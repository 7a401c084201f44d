"""Authoring: spec YAML and Rego in, a checked, tested, signed bundle out (no database, no HTTP)."""
