"""Reading the CSV files a headless Locust run writes (`--csv PREFIX`)."""

from __future__ import annotations

import csv
from pathlib import Path


def read_failures(path: Path) -> str:
    if not path.exists():
        return ""
    with path.open() as handle:
        return "; ".join(f"{row['Error']} (x{row['Occurrences']})" for row in csv.DictReader(handle))


def read_last_history_row(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    with path.open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("Name") == "Aggregated"]
    return rows[-1] if rows else None
