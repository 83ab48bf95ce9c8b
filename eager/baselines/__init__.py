"""Baselines measured through the same harness as EAGER-LLM."""
