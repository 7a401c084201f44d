"""Budgets: usage reports, spend counters, and the signed state bundle enforcers poll."""
