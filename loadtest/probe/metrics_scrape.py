"""Reading the server's /metrics: snapshots and the differences between two of them (what happened in a cell)."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from loadtest.client.api_key import authorization


@dataclass(frozen=True)
class MetricsSnapshot:
    samples: dict[tuple[str, frozenset], float]

    @classmethod
    def scrape(cls, server_url: str, timeout: float = 10) -> MetricsSnapshot:
        # The key too: a server run with --metrics-need-key wants it here.
        request = urllib.request.Request(f"{server_url}/metrics", headers=authorization())
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read().decode()
        return cls(
            {
                (sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(body)
                for sample in family.samples
            }
        )

    def total(self, name: str, **labels: str) -> float:
        """Sum of every sample of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(value for (sample, have), value in self.samples.items() if sample == name and wanted <= have)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(labels)[label] for (sample, labels) in self.samples if sample == name and label in dict(labels)}

    def since(self, earlier: MetricsSnapshot, name: str, **labels: str) -> float:
        return self.total(name, **labels) - earlier.total(name, **labels)

    def mean_since(self, earlier: MetricsSnapshot, histogram: str, **labels: str) -> float | None:
        """Mean of a histogram's observations between two snapshots; None when nothing was observed."""
        count = self.since(earlier, f"{histogram}_count", **labels)
        return self.since(earlier, f"{histogram}_sum", **labels) / count if count else None
