"""Change safety: a candidate revision replayed over recorded decisions, and gates on the result.

`records` turns the audit log's decisions into what replay can evaluate (or
says why it cannot), `candidate` loads and verifies the revision to judge,
`evaluator` runs the real OPA over batches, `report` does the accounting,
`gates` judges a report against the fleet file's limits and `service` ties
them together and records the report as evidence.
"""
