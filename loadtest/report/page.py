"""`embedserve report RUN [BASELINE]`: a sweep's results.json -> PNG plots and one self-contained HTML file.

Plots (plots.py): throughput vs batch size, latency percentiles vs concurrency, throughput vs p99 (the saturation
curve), latency vs load (open-loop arrival rates beside the closed-loop curves), memory per backend. Tables
(tables.py): ratios between backends measured in the same run, the highest load within the SLO (with the maximum
sustainable arrival rate of each backend and their ratios), our backends against peer servers (--peer), every cell,
and with a baseline run, the change of every cell both runs share, regressions marked. The page's pieces
(`PAGE_STYLE`, `html_table`, `embedded_image`) are public: the soak's report is built from them too.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from loadtest.client.http_load import SCHEDULE_SLACK_PCT
from loadtest.probe import fingerprint
from loadtest.probe.fingerprint import drift_lines
from loadtest.report.cells import is_open, load_label, load_run
from loadtest.report.plots import (
    plot_latency_vs_concurrency,
    plot_latency_vs_load,
    plot_memory,
    plot_saturation,
    plot_throughput_vs_batch,
)
from loadtest.report.tables import (
    CELL_COLUMNS,
    PEER_HEADER,
    cell_value,
    comparison_rows,
    format_value,
    max_rate_rows,
    peer_rows,
    ratio_rows,
)
from loadtest.settings import ReportSettings


def html_table(header: list[str], rows: list[list[str]], marked: list[bool] | None = None, mark: str = "bad") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{mark}"' if marked and marked[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
    # A wide table scrolls inside its own box instead of running past the page.
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def embedded_image(path: Path) -> str:
    """A plot inside the page: its SVG inline where save_figure wrote one (sharp at any width), else the PNG."""
    svg = path.with_suffix(".svg")
    if svg.exists():
        text = svg.read_text()
        return f'<figure class="chart">{text[text.index("<svg") :]}</figure>'
    encoded = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{path.stem}" src="data:image/png;base64,{encoded}"></figure>'


PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; padding: 0 1rem; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
tr.bad td { background: #fde0dc; } tr.flag td { background: #fff4ce; }
img { max-width: 100%; height: auto; } figure { margin: 1rem 0; } .note { color: #555; font-size: 0.9rem; }
div.table { max-width: 100%; overflow-x: auto; } figure.chart svg { width: 100%; height: auto; }
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
    slo = sweep["slo_ms"]
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
        html_table(["", ""], facts),
        "<h2>Ratios between backends (inputs/s, same run)</h2>",
        f'<p class="note">Each backend over {html.escape(base)} in the same cell.</p>',
        html_table(["profile", "batch", "load", *backends], ratios),
    ]
    if any(c.get("peer") for c in cells):
        vectors = fingerprint.load(run_dir / fingerprint.FILE) if (run_dir / fingerprint.FILE).exists() else {}
        peers = run["environment"].get("peers", {})
        rows = peer_rows(cells, vectors)
        parts += [
            "<h2>Against peer servers (same generator, same requests, alternated)</h2>",
            '<p class="note">'
            + "; ".join(
                f"{html.escape(n)}: {html.escape(p['host'] + p['path'])} ({html.escape(p['model'])})"
                for n, p in peers.items()
            )
            + f". {sweep.get('rounds', 1)} round(s) per cell. Ratio: ours over the peer's inputs/s, the median of the "
            "rounds' own ratios, with their range; marked where the range holds 1 (within the run's drift). Parity: "
            "the lowest cosine between the two servers' vectors of the same 64 texts.</p>",
            html_table(PEER_HEADER, [row for row, _ in rows], [drift for _, drift in rows], mark="flag"),
        ]
    if len(closed) < len(cells):
        parts.append(
            '<p class="note">Open-loop cells: requests sent at their due time whatever the server does; latency '
            f"from that time, so a backlog counts; goodput: answers within {format_value(slo)} ms per second.</p>"
        )
    max_rates = max_rate_rows(run.get("saturation", []))
    if max_rates:
        parts.append("<h2>Maximum sustainable arrival rate (p99 within the SLO, under 0.1% errors)</h2>")
        parts.append(
            html_table(
                ["backend", "profile", "batch", "SLO ms", "max req/s", "ratio", "inputs/s", "p99 ms", "stopped"],
                max_rates,
            )
        )
    closed_searches = [s for s in run.get("saturation", []) if s["load"] == "closed"]
    if closed_searches:
        parts.append("<h2>Highest throughput within the SLO</h2>")
        parts.append(
            html_table(
                ["backend", "profile", "batch", "SLO p99 ms", "best users", "inputs/s", "p99 ms", "stopped because"],
                [
                    [
                        s["backend"],
                        s["profile"],
                        s["batch_size"],
                        s["slo_ms"],
                        format_value(s["best_concurrency"]),
                        format_value(s["best_inputs_per_s"]),
                        format_value(s["best_p99_ms"]),
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
        parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in drift_lines(run_dir, baseline_dir)))
        parts.append("</ul>")
        parts.append(
            f'<p class="note">Marked: throughput down or p99 up by more than {settings.regression_pct:g}%. '
            f"{sum(bad for _, bad in rows)} of {len(rows)} shared cells regressed.</p>"
        )
        parts.append(
            html_table(
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
        *map(embedded_image, plots),
        "<h2>Every cell</h2>",
        '<p class="note">Marked: the load generator used more than 80% of a core, or fell more than '
        f"{SCHEDULE_SLACK_PCT:g}% behind its schedule, so it may have limited the cell.</p>",
    ]
    parts.append(
        html_table(
            [label for _, label in CELL_COLUMNS],
            [[cell_value(c, key) for key, _ in CELL_COLUMNS] for c in cells],
            [c["client_cpu_bound"] or (c.get("generator_behind_pct") or 0) > SCHEDULE_SLACK_PCT for c in cells],
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
        f"</title><style>{PAGE_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    report = run_dir / "report.html"
    report.write_text(page)
    return report
