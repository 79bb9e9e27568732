"""The report's plots, one PNG each: throughput vs batch size, latency vs concurrency, the saturation curve, latency
vs load (open loop beside closed), memory per backend; one colour per backend in all of them."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt

from loadtest.report.cells import is_open, ordered

# SVG text stays text: the page can be searched, and a test can check every title lies inside its plot.
matplotlib.rcParams["svg.fonttype"] = "none"

# One colour per backend, the same in every plot and every report.
BACKEND_COLORS = {
    "torch": "#ee4c2c",
    "onnx": "#1f77b4",
    "openvino": "#6a3d9a",
    "onnx-int8": "#6baed6",
    "openvino-int8": "#b294c7",
}
FALLBACK_COLORS = ["#2ca02c", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def color(backend: str, backends: list[str]) -> str:
    if backend in BACKEND_COLORS:
        return BACKEND_COLORS[backend]
    unknown = [b for b in backends if b not in BACKEND_COLORS]
    return FALLBACK_COLORS[unknown.index(backend) % len(FALLBACK_COLORS)]


def figure(panels: int, title: str):
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    fig.suptitle(title, fontsize=13, wrap=True)  # a long title on a one-panel figure wraps instead of being cut
    return fig, axes[0]


def save_figure(fig, path: Path) -> Path:
    """The PNG at `path` (for README and issue pages), and an SVG beside it that the HTML report inlines."""
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    fig.savefig(path.with_suffix(".svg"), bbox_inches="tight")
    plt.close(fig)
    return path


def finish_p99_panel(ax, profile: str, xlabel: str, slo_ms: float | None, slo_label: str) -> None:
    """A p99 panel's SLO line (when there is one), labels, log scale, grid and legend."""
    if slo_ms:
        ax.axhline(slo_ms, color="black", linestyle=":", label=f"{slo_label} {slo_ms:g} ms")
    ax.set(title=f"{profile} texts", xlabel=xlabel, ylabel="p99 latency (ms)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def plot_throughput_vs_batch(cells: list[dict], backends: list[str], path: Path) -> Path:
    profiles = ordered(c["profile"] for c in cells)
    fig, axes = figure(len(profiles), "Throughput vs batch size (best over concurrency)")
    for ax, profile in zip(axes, profiles, strict=True):
        for backend in backends:
            best: dict[int, float] = defaultdict(float)
            for c in cells:
                if c["backend"] == backend and c["profile"] == profile:
                    best[c["batch_size"]] = max(best[c["batch_size"]], c["inputs_per_s"])
            if best:
                sizes = sorted(best)
                ax.plot(sizes, [best[s] for s in sizes], marker="o", label=backend, color=color(backend, backends))
        ax.set(title=f"{profile} texts", xlabel="inputs per request (batch size)", ylabel="inputs/s")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def plot_latency_vs_concurrency(cells: list[dict], backends: list[str], path: Path) -> Path:
    profiles = ordered(c["profile"] for c in cells)
    batch_sizes = ordered(c["batch_size"] for c in cells)
    batch = batch_sizes[len(batch_sizes) // 2]
    fig, axes = figure(len(profiles), f"Latency vs concurrency (batch size {batch}; solid p99, dashed p50)")
    for ax, profile in zip(axes, profiles, strict=True):
        for backend in backends:
            own = sorted(
                (c for c in cells if c["backend"] == backend and c["profile"] == profile and c["batch_size"] == batch),
                key=lambda c: c["concurrency"],
            )
            if not own:
                continue
            users = [c["concurrency"] for c in own]
            ax.plot(
                users, [c["p99_ms"] for c in own], marker="o", color=color(backend, backends), label=f"{backend} p99"
            )
            ax.plot(users, [c["p50_ms"] for c in own], linestyle="--", color=color(backend, backends), alpha=0.7)
        ax.set(title=f"{profile} texts", xlabel="concurrent users", ylabel="latency (ms)")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def plot_saturation(cells: list[dict], backends: list[str], slo_ms: float | None, path: Path) -> Path:
    profiles = ordered(c["profile"] for c in cells)
    fig, axes = figure(len(profiles), "Saturation: throughput vs p99 as concurrency rises")
    for ax, profile in zip(axes, profiles, strict=True):
        for backend in backends:
            for batch in ordered(c["batch_size"] for c in cells):
                own = sorted(
                    (
                        c
                        for c in cells
                        if c["backend"] == backend and c["profile"] == profile and c["batch_size"] == batch
                    ),
                    key=lambda c: c["concurrency"],
                )
                if own:
                    ax.plot(
                        [c["inputs_per_s"] for c in own],
                        [c["p99_ms"] for c in own],
                        marker="o",
                        color=color(backend, backends),
                        alpha=0.4 + 0.6 * (batch == max(c["batch_size"] for c in cells)),
                        label=f"{backend} b{batch}",
                    )
        finish_p99_panel(ax, profile, "inputs/s", slo_ms, "SLO p99")
    return save_figure(fig, path)


# Open-loop cells at the rate they were offered, closed-loop ones at the rate their users reached.
LOAD_STYLES = (
    ("open", "offered_rate", {"marker": "o"}),
    ("closed", "requests_per_s", {"marker": "s", "linestyle": "--", "alpha": 0.6}),
)


def plot_latency_vs_load(cells: list[dict], backends: list[str], slo_ms: float | None, path: Path) -> Path:
    """p99 against requests per second: open loop at its offered rate (solid), closed loop at the rate its users
    reached (dashed). Closed loop hides the tail that the same rate shows when arrivals do not wait."""
    profiles = ordered(c["profile"] for c in cells)
    fig, axes = figure(len(profiles), "p99 vs load: open (solid), closed loop (dashed)")
    for ax, profile in zip(axes, profiles, strict=True):
        for backend in backends:
            for batch in ordered(c["batch_size"] for c in cells):
                own = [c for c in cells if (c["backend"], c["profile"], c["batch_size"]) == (backend, profile, batch)]
                for load, rate, style in LOAD_STYLES:
                    points = sorted((c[rate], c["p99_ms"]) for c in own if is_open(c) == (load == "open"))
                    if points:
                        ax.plot(
                            *zip(*points, strict=True),
                            color=color(backend, backends),
                            label=f"{backend} b{batch} {load}",
                            **style,
                        )
        finish_p99_panel(ax, profile, "requests/s", slo_ms, "SLO")
    return save_figure(fig, path)


def plot_memory(cells: list[dict], backends: list[str], path: Path) -> Path:
    fig, axes = figure(1, "Peak memory per backend (inference worker RSS; GPU memory where present)")
    ax = axes[0]
    rss = [max((c["worker_rss_peak_mb"] or 0) for c in cells if c["backend"] == b) for b in backends]
    bars = ax.bar(backends, rss, color=[color(b, backends) for b in backends])
    ax.bar_label(bars, fmt="%.0f MB")
    gpu = [max((c["gpu_memory_peak_mb"] or 0) for c in cells if c["backend"] == b) for b in backends]
    if any(gpu):
        ax.plot(backends, gpu, "k^", label="GPU memory used (MB)")
        ax.legend()
    ax.set(xlabel="backend", ylabel="peak RSS (MB)")
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)
