"""A running server's resident memory over a load, per process, from its own /metrics; and how it drifted.

The one memory sampler of the load tools: the soak, and the bench's served half and soak, read memory this way, so
that it works against a server in a container or on another host as well as against a local one.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from loadtest.probe.metrics_scrape import MetricsSnapshot
from loadtest.processes import SPAWN

RSS = "embedserve_process_resident_memory_bytes"
MB = 1024 * 1024
TREE = "server tree"


def rss_by_process(snapshot: MetricsSnapshot) -> dict[str, float]:
    """MB per server process, by role (`http`, `main`, ...; a worker as `worker <backend>`)."""
    row: dict[str, float] = {}
    for (name, labels), value in snapshot.samples.items():
        if name == RSS:
            labels = dict(labels)
            key = labels["role"] + (f" {labels['backend']}" if labels.get("backend") else "")
            row[key] = row.get(key, 0.0) + value / MB
    return row


def _sample(url: str, every: float, stop, samples) -> None:
    """The sampler's child process: a row every `every` seconds until `stop` is set, then all rows at once."""
    started = time.monotonic()
    rows = []
    while not stop.wait(every if rows else 0):
        try:
            snapshot = MetricsSnapshot.scrape(url, timeout=5)
        except OSError:
            continue
        rows.append({"t": round(time.monotonic() - started, 2), **rss_by_process(snapshot)})
    samples.send(rows)


class MemorySampler:
    """Samples the server's memory from entering to leaving, in a child process of its own (a load generator that
    keeps its own process busy cannot delay a sample); `rows` holds the samples once it has left: seconds since the
    start (`t`) and MB per process."""

    def __init__(self, url: str, every: float):
        self.rows: list[dict[str, float]] = []
        self._stop = SPAWN.Event()
        self._received, sent = SPAWN.Pipe(duplex=False)
        self._process = SPAWN.Process(target=_sample, args=(url, every, self._stop, sent), daemon=True)

    def __enter__(self) -> MemorySampler:
        self._process.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self.rows = self._received.recv() if self._received.poll(30) else []
        self._process.join(10)

    def peaks(self) -> dict[str, float]:
        """The largest sample of each process."""
        peaks: dict[str, float] = {}
        for row in self.rows:
            for key, value in row.items():
                if key != "t":
                    peaks[key] = max(peaks.get(key, 0.0), value)
        return peaks


@dataclass
class MemoryDrift:
    process: str
    first_mb: float
    last_mb: float
    max_mb: float
    # Medians over a window right after the warm-up and over the last window: a worker's RSS swings with each batch,
    # so single samples would make the drift a coin toss.
    settled_mb: float
    end_mb: float

    @property
    def drift_pct(self) -> float:
        return 100 * (self.end_mb / self.settled_mb - 1) if self.settled_mb else 0.0


def memory_drift(rows: list[dict], warmup: float, window: float) -> list[MemoryDrift]:
    """Per process (and the whole tree): first, last and max RSS, and the drift from the window after the warm-up to
    the last window."""
    if not rows:
        return []
    keys = sorted({key for row in rows for key in row if key not in ("t", TREE)})
    for row in rows:
        row[TREE] = sum(row.get(key, 0.0) for key in keys)
    end = rows[-1]["t"]
    settled = [row for row in rows if warmup <= row["t"] < warmup + window] or rows[-1:]
    final = [row for row in rows if row["t"] > end - window] or rows[-1:]
    return [
        MemoryDrift(
            key,
            first_mb=rows[0].get(key, 0.0),
            last_mb=rows[-1].get(key, 0.0),
            max_mb=max(row.get(key, 0.0) for row in rows),
            settled_mb=statistics.median(row.get(key, 0.0) for row in settled),
            end_mb=statistics.median(row.get(key, 0.0) for row in final),
        )
        for key in [*keys, TREE]
    ]
