"""The LLM side: backbone loading (and, later, tokens, tasks and training)."""
