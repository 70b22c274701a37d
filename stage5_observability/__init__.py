"""Stage 5, observability: under construction (its bootstrap, runbook and compose file
come later)."""
