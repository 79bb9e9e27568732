"""embedserve: an OpenAI-compatible embedding server with swappable backends."""

__version__ = "0.1.0"
