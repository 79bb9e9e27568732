"""The engine: one model on one backend, from inputs to embeddings (tokenize -> plan passes -> forward -> pool).

The names below are its public entry points, the only ones the load-testing side uses (`embedserve bench`
measures the engine in-process, the very code the server runs).
"""

from server.engine.artefacts import artefact_dir, is_complete  # where an export lives, and whether it is whole
from server.engine.embedder import Embedder, Encoded, ForwardStats
from server.engine.models import resolve_model_dir
from server.hardware import BF16_FLAGS, cpu_flags, resolve_device  # what the backends choose kernels by

__all__ = [
    "BF16_FLAGS",
    "Embedder",
    "Encoded",
    "ForwardStats",
    "artefact_dir",
    "cpu_flags",
    "is_complete",
    "resolve_device",
    "resolve_model_dir",
]
