"""A sweep's run as the report reads it: its results.json, and what each measured cell's load was."""

from __future__ import annotations

import json
from pathlib import Path


def load_run(run_dir: Path) -> dict:
    path = run_dir / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: give the directory `embedserve sweep` wrote")
    return json.loads(path.read_text())


def ordered(values) -> list:
    return sorted(set(values))


def is_open(cell: dict) -> bool:
    return cell["load"] == "open"


def load_label(cell: dict) -> str:
    """A cell's load: "16 users" (closed loop) or "20 req/s" (open loop)."""
    return f"{cell['rate']:g} req/s" if is_open(cell) else f"{cell['concurrency']} users"


def load_order(cell: dict) -> tuple:
    return (is_open(cell), cell.get("rate") or 0, cell["concurrency"])
