"""The host CPU's instruction-set flags, as /proc/cpuinfo names them (`avx512_vnni`, `amx_bf16`, ...).

Which kernels pay off depends on them: int8 needs a dot-product set (VNNI or AMX), and bf16 float ops beat f32 only
with AMX. The bench prints them beside every figure."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def cpu_flags() -> frozenset[str]:
    """Empty where /proc/cpuinfo is missing (macOS) or lists no flags (some ARM kernels call them Features)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()
