"""The multiprocessing context of the load tools' child processes (the open-loop generator, the memory sampler, the
bench's in-process measurements): spawn, so that a child inherits neither a parent's threads nor a loaded model."""

import multiprocessing as mp

SPAWN = mp.get_context("spawn")
