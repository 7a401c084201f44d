"""Serving enforcers: OPA's bundle protocol with long polling, and what each enforcer reports."""
