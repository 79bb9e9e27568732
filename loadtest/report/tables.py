"""The report's tables, as rows of strings: ratios between backends of one run, the comparison with a baseline run,
the maximum sustainable rates, every cell."""

from __future__ import annotations

from loadtest.report.cells import load_label, load_order, ordered


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
    return format_value(key(cell) if callable(key) else cell.get(key))


def max_rate_rows(saturation: list[dict]) -> list[list[str]]:
    """The maximum sustainable arrival rate of each backend, and its ratio to the first backend's, per shape."""
    searches = [s for s in saturation if s["load"] == "open"]
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
                    format_value(search["slo_ms"]),
                    format_value(search["best_rate"]),
                    f"{ratio} of {base['backend']}",
                    format_value(search["best_inputs_per_s"]),
                    format_value(search["best_p99_ms"]),
                    search["stopped_because"],
                ]
            )
    return rows


def format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
