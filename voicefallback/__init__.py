"""voicefallback: keep voice AI agents off dead or slow LLMs."""

__version__ = "0.1.0"
