"""The multiprocessing context of every object the server's processes share (queues, locks, shared values).

LitServe spawns the inference workers and forks the HTTP processes; an object made in the fork context cannot follow
a worker there, one made in the spawn context goes to both."""

import multiprocessing as mp

SPAWN = mp.get_context("spawn")
