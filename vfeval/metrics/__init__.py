"""Metrics with their confidence intervals. Each metric module states its version; results record it."""
