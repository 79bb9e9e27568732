"""`embedserve report RUN [BASELINE]`: a sweep's results.json -> PNG plots and one self-contained HTML file.

Plots: throughput vs batch size, latency percentiles vs concurrency, throughput vs p99 (the saturation curve),
latency vs load (open-loop arrival rates beside the closed-loop curves), memory per backend. Tables: ratios between
backends measured in the same run, the highest load within the SLO (with the maximum sustainable arrival rate of
each backend and their ratios), every cell, and with a baseline run, the change of every cell both runs share,
regressions marked.
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt

from loadtest.http_load import SCHEDULE_SLACK_PCT
from loadtest.settings import ReportSettings

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


def load_run(run_dir: Path) -> dict:
    path = run_dir / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: give the directory `embedserve sweep` wrote")
    return json.loads(path.read_text())


def ordered(values) -> list:
    return sorted(set(values))


def is_open(cell: dict) -> bool:
    return cell.get("load") == "open"


def load_label(cell: dict) -> str:
    """A cell's load: "16 users" (closed loop) or "20 req/s" (open loop)."""
    return f"{cell['rate']:g} req/s" if is_open(cell) else f"{cell['concurrency']} users"


def load_order(cell: dict) -> tuple:
    return (is_open(cell), cell.get("rate") or 0, cell["concurrency"])


def _figure(panels: int, title: str):
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    fig.suptitle(title, fontsize=13)
    return fig, axes[0]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_throughput_vs_batch(cells: list[dict], backends: list[str], path: Path) -> Path:
    profiles = ordered(c["profile"] for c in cells)
    fig, axes = _figure(len(profiles), "Throughput vs batch size (best over concurrency)")
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
    return _save(fig, path)


def plot_latency_vs_concurrency(cells: list[dict], backends: list[str], path: Path) -> Path:
    profiles = ordered(c["profile"] for c in cells)
    batch_sizes = ordered(c["batch_size"] for c in cells)
    batch = batch_sizes[len(batch_sizes) // 2]
    fig, axes = _figure(len(profiles), f"Latency vs concurrency (batch size {batch}; solid p99, dashed p50)")
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
    return _save(fig, path)


def plot_saturation(cells: list[dict], backends: list[str], slo_ms: float | None, path: Path) -> Path:
    profiles = ordered(c["profile"] for c in cells)
    fig, axes = _figure(len(profiles), "Saturation: throughput vs p99 as concurrency rises")
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
        if slo_ms:
            ax.axhline(slo_ms, color="black", linestyle=":", label=f"SLO p99 {slo_ms:g} ms")
        ax.set(title=f"{profile} texts", xlabel="inputs/s", ylabel="p99 latency (ms)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


# Open-loop cells at the rate they were offered, closed-loop ones at the rate their users reached.
LOAD_STYLES = (
    ("open", "offered_rate", {"marker": "o"}),
    ("closed", "requests_per_s", {"marker": "s", "linestyle": "--", "alpha": 0.6}),
)


def plot_latency_vs_load(cells: list[dict], backends: list[str], slo_ms: float | None, path: Path) -> Path:
    """p99 against requests per second: open loop at its offered rate (solid), closed loop at the rate its users
    reached (dashed). Closed loop hides the tail that the same rate shows when arrivals do not wait."""
    profiles = ordered(c["profile"] for c in cells)
    fig, axes = _figure(len(profiles), "p99 vs load: open (solid), closed loop (dashed)")
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
        if slo_ms:
            ax.axhline(slo_ms, color="black", linestyle=":", label=f"SLO {slo_ms:g} ms")
        ax.set(title=f"{profile} texts", xlabel="requests/s", ylabel="p99 latency (ms)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_memory(cells: list[dict], backends: list[str], path: Path) -> Path:
    fig, axes = _figure(1, "Peak memory per backend (inference worker RSS; GPU memory where present)")
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
    return _save(fig, path)


def ratio_rows(cells: list[dict], backends: list[str]) -> tuple[str, list[list[str]]]:
    """inputs/s of every backend over the baseline backend (torch when present), cell by cell, same run."""
    base = "torch" if "torch" in backends else backends[0]
    by_key = {(c["backend"], c["profile"], c["batch_size"], load_label(c)): c for c in cells}
    shapes = {(c["profile"], c["batch_size"], load_order(c)): load_label(c) for c in cells}
    rows = []
    for (profile, batch, _), load in sorted(shapes.items()):
        reference = by_key.get((base, profile, batch, load))
        if not reference or not reference["inputs_per_s"]:
            continue
        row = [profile, str(batch), load]
        for backend in backends:
            cell = by_key.get((backend, profile, batch, load))
            row.append(f"{cell['inputs_per_s'] / reference['inputs_per_s']:.2f}x" if cell else "-")
        rows.append(row)
    return base, rows


def comparison_rows(cells: list[dict], baseline: list[dict], regression_pct: float) -> list[tuple[list[str], bool]]:
    """Cells both runs share: throughput and p99 change; a cell is a regression when either worsens too much."""
    key = lambda c: (c["backend"], c["profile"], c["batch_size"], load_label(c))  # noqa: E731
    before = {key(c): c for c in baseline}
    rows = []
    for cell in cells:
        old = before.get(key(cell))
        if not old or not old["inputs_per_s"] or not old["p99_ms"]:
            continue
        throughput = 100 * (cell["inputs_per_s"] / old["inputs_per_s"] - 1)
        p99 = 100 * (cell["p99_ms"] / old["p99_ms"] - 1)
        regression = throughput < -regression_pct or p99 > regression_pct
        rows.append(
            (
                [
                    *map(str, key(cell)),
                    f"{old['inputs_per_s']:.1f}",
                    f"{cell['inputs_per_s']:.1f}",
                    f"{throughput:+.1f}%",
                    f"{old['p99_ms']:.0f}",
                    f"{cell['p99_ms']:.0f}",
                    f"{p99:+.1f}%",
                ],
                regression,
            )
        )
    return rows


def _table(header: list[str], rows: list[list[str]], marked: list[bool] | None = None, mark: str = "bad") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{mark}"' if marked and marked[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(path: Path) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{path.stem}" src="data:image/png;base64,{encoded}"></figure>'


CELL_COLUMNS = [
    ("backend", "backend"),
    ("profile", "profile"),
    ("batch_size", "batch"),
    (load_label, "load"),
    ("offered_rate", "offered req/s"),
    ("requests_per_s", "req/s"),
    ("goodput_rate", "goodput req/s"),
    ("inputs_per_s", "inputs/s"),
    ("tokens_per_s", "tokens/s"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("p999_ms", "p99.9 ms"),
    ("max_ms", "max ms"),
    ("queue_wait_ms", "queue ms"),
    ("inference_ms", "inference ms"),
    ("inputs_per_forward", "inputs/pass"),
    ("worker_rss_peak_mb", "RSS MB"),
    ("worker_cores", "worker cores"),
    ("http_cores", "HTTP cores"),
    ("other_cores", "other cores"),
    ("shed", "shed (503)"),
    ("failures", "failures"),
    ("client_cpu_pct", "load generator CPU %"),
    ("generator_behind_pct", "generator behind %"),
]


def cell_value(cell: dict, key) -> str:
    return _format(key(cell) if callable(key) else cell.get(key))


def client_cpu_bound(cell: dict) -> bool:
    """(Runs written before the open loop called it locust_cpu_bound.)"""
    return bool(cell.get("client_cpu_bound", cell.get("locust_cpu_bound")))


def max_rate_rows(saturation: list[dict]) -> list[list[str]]:
    """The maximum sustainable arrival rate of each backend, and its ratio to the first backend's, per shape."""
    searches = [s for s in saturation if s.get("load") == "open"]
    rows = []
    for profile, batch in ordered((s["profile"], s["batch_size"]) for s in searches):
        group = [s for s in searches if (s["profile"], s["batch_size"]) == (profile, batch)]
        base = group[0]
        for search in group:
            ratio = (
                f"{search['best_rate'] / base['best_rate']:.2f}x" if search["best_rate"] and base["best_rate"] else "-"
            )
            rows.append(
                [
                    search["backend"],
                    profile,
                    str(batch),
                    _format(search["slo_ms"]),
                    _format(search["best_rate"]),
                    f"{ratio} of {base['backend']}",
                    _format(search["best_inputs_per_s"]),
                    _format(search["best_p99_ms"]),
                    search["stopped_because"],
                ]
            )
    return rows


def _format(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
tr.bad td { background: #fde0dc; } tr.flag td { background: #fff4ce; }
img { max-width: 100%; } figure { margin: 1rem 0; } .note { color: #555; font-size: 0.9rem; }
"""


def write_report(settings: ReportSettings) -> Path:
    run_dir = settings.runs[0]
    run = load_run(run_dir)
    cells = run["cells"]
    if not cells:
        raise ValueError(f"{run_dir} holds no measured cell")
    backends = list(dict.fromkeys(c["backend"] for c in cells))
    plots_dir = run_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    sweep = run["sweep"]
    slo = sweep.get("slo_ms", sweep.get("slo_p99_ms"))
    closed = [c for c in cells if not is_open(c)]
    plots = []
    if closed:
        plots += [
            plot_throughput_vs_batch(closed, backends, plots_dir / "throughput_vs_batch.png"),
            plot_latency_vs_concurrency(closed, backends, plots_dir / "latency_vs_concurrency.png"),
            plot_saturation(closed, backends, slo if sweep.get("find_max") else None, plots_dir / "saturation.png"),
        ]
    if len(closed) < len(cells):
        plots.append(plot_latency_vs_load(cells, backends, slo, plots_dir / "latency_vs_load.png"))
    plots.append(plot_memory(cells, backends, plots_dir / "memory.png"))
    env = run["environment"]
    facts = [
        ["model", env["server"]["id"]],
        ["CPU", f"{env['cpu']} ({env['cpu_count']} cores)"],
        ["GPU", ", ".join(env["gpus"]) or "none"],
        ["git commit", env.get("git_commit") or "-"],
        ["packages", ", ".join(f"{k} {v}" for k, v in env["packages"].items())],
        ["per cell", f"{sweep['duration']:g} s measured after {sweep['warmup']:g} s warm-up"],
        ["started", env["started_at"]],
    ]
    base, ratios = ratio_rows(cells, backends)
    parts = [
        f"<h1>embedserve sweep {html.escape(run_dir.name)}</h1>",
        _table(["", ""], facts),
        "<h2>Ratios between backends (inputs/s, same run)</h2>",
        f'<p class="note">Each backend over {html.escape(base)} in the same cell.</p>',
        _table(["profile", "batch", "load", *backends], ratios),
    ]
    if len(closed) < len(cells):
        parts.append(
            '<p class="note">Open-loop cells: requests sent at their due time whatever the server does; latency '
            f"from that time, so a backlog counts; goodput: answers within {_format(slo)} ms per second.</p>"
        )
    max_rates = max_rate_rows(run.get("saturation", []))
    if max_rates:
        parts.append("<h2>Maximum sustainable arrival rate (p99 within the SLO, under 0.1% errors)</h2>")
        parts.append(
            _table(
                ["backend", "profile", "batch", "SLO ms", "max req/s", "ratio", "inputs/s", "p99 ms", "stopped"],
                max_rates,
            )
        )
    closed_searches = [s for s in run.get("saturation", []) if s.get("load", "closed") == "closed"]
    if closed_searches:
        parts.append("<h2>Highest throughput within the SLO</h2>")
        parts.append(
            _table(
                ["backend", "profile", "batch", "SLO p99 ms", "best users", "inputs/s", "p99 ms", "stopped because"],
                [
                    [
                        s["backend"],
                        s["profile"],
                        s["batch_size"],
                        s.get("slo_ms", s.get("slo_p99_ms")),
                        _format(s["best_concurrency"]),
                        _format(s["best_inputs_per_s"]),
                        _format(s["best_p99_ms"]),
                        s["stopped_because"],
                    ]
                    for s in closed_searches
                ],
            )
        )
    if len(settings.runs) > 1:
        baseline_dir = settings.runs[1]
        rows = comparison_rows(cells, load_run(baseline_dir)["cells"], settings.regression_pct)
        parts.append(f"<h2>Against {html.escape(baseline_dir.name)}</h2>")
        parts.append(
            f'<p class="note">Marked: throughput down or p99 up by more than {settings.regression_pct:g}%. '
            f"{sum(bad for _, bad in rows)} of {len(rows)} shared cells regressed.</p>"
        )
        parts.append(
            _table(
                [
                    "backend",
                    "profile",
                    "batch",
                    "load",
                    "inputs/s before",
                    "inputs/s now",
                    "change",
                    "p99 before",
                    "p99 now",
                    "change",
                ],
                [r for r, _ in rows],
                [bad for _, bad in rows],
            )
        )
    parts += [
        "<h2>Plots</h2>",
        *map(_image, plots),
        "<h2>Every cell</h2>",
        '<p class="note">Marked: the load generator used more than 80% of a core, or fell more than '
        f"{SCHEDULE_SLACK_PCT:g}% behind its schedule, so it may have limited the cell.</p>",
    ]
    parts.append(
        _table(
            [label for _, label in CELL_COLUMNS],
            [[cell_value(c, key) for key, _ in CELL_COLUMNS] for c in cells],
            [client_cpu_bound(c) or (c.get("generator_behind_pct") or 0) > SCHEDULE_SLACK_PCT for c in cells],
            mark="flag",
        )
    )
    failures = [(c, c["failure_reasons"]) for c in cells if c["failure_reasons"]]
    if failures:
        parts.append(
            "<h2>Failures</h2><ul>"
            + "".join(
                f"<li>{html.escape(c['backend'])} {html.escape(c['profile'])} b{c['batch_size']} {load_label(c)}: "
                f"{html.escape(reasons)}</li>"
                for c, reasons in failures
            )
            + "</ul>"
        )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>embedserve sweep {html.escape(run_dir.name)}"
        f"</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    report = run_dir / "report.html"
    report.write_text(page)
    return report
