"""Experiment tools kept apart from the product: recipe search, paired comparisons, diagnostics.

Nothing in the product layers imports from here (import-linter checks it)."""
