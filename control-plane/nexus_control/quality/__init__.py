"""Quality gates: offline evaluation results, and the check publishing makes against them."""
