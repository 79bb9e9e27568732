"""What the host offers the runtimes: its CPU's instruction sets, and whether a CUDA GPU is there.

Which kernels pay off depends on the instruction sets: int8 needs a dot-product set (VNNI or AMX), and bf16 float
ops need AVX512-BF16 or AMX (on an int8 graph they beat f32 only with AMX). The bench prints them beside every
figure."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path


def resolve_device(requested: str) -> str:
    """`auto` means the first CUDA GPU when one is visible, decided without importing torch."""
    if requested == "cuda":
        return "cuda:0"
    if requested == "auto" and shutil.which("nvidia-smi"):
        probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if probe.returncode == 0 and "GPU" in probe.stdout:
            return "cuda:0"
    return "cpu"


# CPU features with bf16 arithmetic.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@cache
def cpu_flags() -> frozenset[str]:
    """The flags as /proc/cpuinfo names them (`avx512_vnni`, `amx_bf16`, ...); empty where /proc/cpuinfo is missing
    (macOS) or lists no flags (some ARM kernels call them Features)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()
