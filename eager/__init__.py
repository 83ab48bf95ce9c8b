"""eager: EAGER-LLM, generative recommendation with dual-source item codes."""

__version__ = "0.1.0"
