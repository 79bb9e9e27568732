"""The soak's report: its figures (`SoakReport`), its summary lines, its plot over time, soak.json and report.html;
and the overload scenario's table of phases."""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadtest.client.latency import LatencySummary
from loadtest.probe.memory import TREE, MemoryDrift
from loadtest.report.page import PAGE_STYLE, embedded_image
from loadtest.report.plots import figure, save_figure
from loadtest.settings import SoakSettings


@dataclass
class SoakReport:
    backends: list[str]
    rate: float
    seconds: float
    requests: int
    valid: int
    invalid: int
    failures: dict[str, int]
    shed: int
    latency: LatencySummary | None  # of the valid requests admitted (not shed)
    shed_latency: LatencySummary | None  # how fast the shed ones got their 503
    goodput_rate: float
    offered_rate: float
    admitted_rate: float  # valid requests answered, not shed, per second
    shed_rate: float
    achieved_rate: float
    generator_behind_pct: float
    memory: list[MemoryDrift]
    memory_window: float  # seconds: the drift compares medians over the window after the warm-up and the last one
    samples: list[dict] = field(default_factory=list)
    windows: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def summary_lines(report: SoakReport, settings: SoakSettings) -> list[str]:
    lines = [
        f"{report.requests} requests ({report.valid} valid, {report.invalid} invalid on purpose): "
        f"{report.offered_rate:.2f}/s offered ({settings.arrival} at {report.rate:g}/s), {report.achieved_rate:.2f}/s "
        f"answered right, valid ones admitted {report.admitted_rate:.2f}/s, shed {report.shed} "
        f"({report.shed_rate:.2f}/s); goodput {report.goodput_rate:.2f}/s within "
        f"{settings.slo_ms:g} ms; generator at worst {report.generator_behind_pct:.2f}% behind",
        f"failures: {report.failed}"
        + "".join(f"\n  {count:>6}  {reason}" for reason, count in sorted(report.failures.items())),
    ]
    for name, latency in (("admitted valid requests", report.latency), ("shed requests' 503", report.shed_latency)):
        if latency:
            lines.append(
                f"latency of {name} (ms, from their due time): p50 {latency.p50_ms:.1f}  p90 {latency.p90_ms:.1f}"
                f"  p99 {latency.p99_ms:.1f}  p99.9 {latency.p999_ms:.1f}  max {latency.max_ms:.1f}"
            )
    lines.append(
        "resident memory (MB; settled: median of the window after the warm-up, end: of the last window; drift "
        "between them):"
    )
    lines.append(f"  {'process':<20}{'first':>9}{'settled':>9}{'end':>9}{'last':>9}{'max':>9}{'drift':>9}")
    for row in report.memory:
        lines.append(
            f"  {row.process:<20}{row.first_mb:>9.0f}{row.settled_mb:>9.0f}{row.end_mb:>9.0f}{row.last_mb:>9.0f}"
            f"{row.max_mb:>9.0f}{row.drift_pct:>8.1f}%"
        )
    return lines


def plot_soak(report: SoakReport, path: Path) -> Path:
    fig, (memory, latency, rates) = figure(3, "Soak: memory, latency and load over time")
    for key in [row.process for row in report.memory if row.process != TREE]:
        memory.plot([s["t"] for s in report.samples], [s.get(key, 0) for s in report.samples], label=key)
    memory.set(xlabel="seconds", ylabel="resident memory (MB)", title="per server process")
    memory.grid(alpha=0.3)
    memory.legend(fontsize=7)
    windows = [w for w in report.windows if w["p99_ms"] is not None]
    latency.plot([w["t"] for w in windows], [w["p99_ms"] for w in windows], marker="o", label="p99")
    latency.plot([w["t"] for w in windows], [w["p50_ms"] for w in windows], linestyle="--", label="p50")
    latency.set(xlabel="seconds", ylabel="latency (ms)", title="admitted valid requests, from their due time")
    latency.grid(alpha=0.3)
    latency.legend()
    for key, label in (("offered_per_s", "offered"), ("admitted_per_s", "admitted"), ("shed_per_s", "shed (503)")):
        rates.plot([w["t"] for w in report.windows], [w[key] for w in report.windows], label=label)
    rates.set(xlabel="seconds", ylabel="valid requests per second", title="offered, admitted, shed")
    rates.grid(alpha=0.3)
    rates.legend()
    return save_figure(fig, path)


def write_soak(report: SoakReport, settings: SoakSettings, environment: dict, run_dir: Path) -> Path:
    document = {
        "environment": environment,
        "soak": json.loads(settings.model_dump_json()),
        **{key: value for key, value in asdict(report).items() if key not in ("latency", "shed_latency", "memory")},
        "latency": asdict(report.latency) if report.latency else None,
        "shed_latency": asdict(report.shed_latency) if report.shed_latency else None,
        "memory": [{**asdict(row), "drift_pct": row.drift_pct} for row in report.memory],
    }
    (run_dir / "soak.json").write_text(json.dumps(document, indent=2))
    plot = plot_soak(report, run_dir / "soak.png")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>embedserve soak {html.escape(run_dir.name)}"
        f"</title><style>{PAGE_STYLE}</style></head><body><h1>embedserve soak {html.escape(run_dir.name)}</h1>"
        f"<pre>{html.escape(chr(10).join(summary_lines(report, settings)))}</pre>{embedded_image(plot)}</body></html>"
    )
    (run_dir / "report.html").write_text(page)
    return run_dir


def overload_lines(phases: list[tuple[str, SoakReport]], settings: SoakSettings) -> list[str]:
    capacity = phases[0][1].admitted_rate
    ms = lambda summary, name: f"{getattr(summary, name):.0f}" if summary else "-"  # noqa: E731
    lines = [
        f"capacity (valid requests admitted per second by the probe at {settings.rate:g}/s): {capacity:.2f}",
        f"{'phase':<18}{'offered':>9}{'admitted':>9}{'shed':>7}{'failed':>7}{'adm p50':>9}{'adm p99':>9}"
        f"{'shed p99':>9}{'goodput':>9}{'of cap.':>8}{'tree drift':>11}",
    ]
    for name, report in phases:
        tree = next((row for row in report.memory if row.process == TREE), None)
        lines.append(
            f"{name:<18}{report.offered_rate:>9.2f}{report.admitted_rate:>9.2f}{report.shed_rate:>7.2f}"
            f"{report.failed:>7}{ms(report.latency, 'p50_ms'):>9}{ms(report.latency, 'p99_ms'):>9}"
            f"{ms(report.shed_latency, 'p99_ms'):>9}{report.goodput_rate:>9.2f}"
            f"{report.goodput_rate / capacity if capacity else 0:>8.0%}"
            f"{(f'{tree.drift_pct:+.1f}%' if tree else '-'):>11}"
        )
    lines.append(
        f"(requests per second of valid requests; latencies in ms from each request's due time; goodput: admitted "
        f"answers within --slo-ms {settings.slo_ms:g}; tree drift: the server's resident memory from the end of the "
        "warm-up to the end)"
    )
    return lines
