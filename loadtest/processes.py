"""The multiprocessing context of the load tools' child processes (the open-loop generator, the memory sampler, the
bench's in-process measurements): spawn, so that a child inherits neither a parent's threads nor a loaded model."""

import multiprocessing as mp
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

SPAWN = mp.get_context("spawn")


def in_child(function: Callable, *args):
    """`function(*args)` in a fresh process: its peak RSS is its own, and what it loads leaves with it."""
    with ProcessPoolExecutor(max_workers=1, mp_context=SPAWN) as pool:
        return pool.submit(function, *args).result()
